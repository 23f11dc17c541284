"""Hardware probe in PyTorch: the float32 matmul peak and the floor of one training epoch.

Run in a child process by harness.execution.probe (`python -m backends.torch.probe JSON`), pinned to the same
cores and thread count as the backends, so its figures are comparable with theirs.

The floor is the time of the matrix products alone of one epoch's training steps at the model's own
shapes: per batch, the 5 forward products, the 5 weight-gradient products and the 4 input-gradient
products (fc1 needs no input gradient), on preallocated operands (`out=`), best of several repeats.
No framework can train an epoch faster than this on the same device and threads without changing the
arithmetic, so each backend's s/epoch divided by it says how much time goes elsewhere.

On CUDA the products are captured once in a CUDA graph and the graph is replayed: issued one by one, a
few thousand tiny kernels cost more in launches than in arithmetic, and a backend that fuses or graphs
its step (XLA, a captured step) would come out below such a "floor". A TF32 or bf16 run is held to
the floor and peak of its own arithmetic, so for those precisions the probe measures them again with
TF32 products or with bf16 operands (the products a bf16 run's autocast or bf16 copies make; on AMX
CPUs and tensor-core GPUs far faster than float32). On the CPU there is no launch to exclude, and
the products run as a plain loop.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch

from backends.torch import precision as torch_precision
from harness.config import ModelConfig
from workloads.mlp_vae import train_products


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: first touches, kernel selection
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def matmul_peak_gflops(device: torch.device, n: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    inner = 10 if device.type == "cuda" else 1
    def run():
        for _ in range(inner):
            torch.mm(a, b, out=c)
    return 2 * n**3 * inner / _best_of(run, device, repeats) / 1e9


def epoch_products(m: ModelConfig, batch_sizes: list[int], device: torch.device,
                   dtype: torch.dtype = torch.float32):
    """A closure doing every matrix product of one epoch's training steps, on preallocated operands."""
    r = lambda *s: torch.randn(*s, device=device, dtype=dtype)
    ops = {}
    for B in set(batch_sizes):
        ops[B] = [(r(rows, k), r(k, cols), torch.empty(rows, cols, device=device, dtype=dtype))
                  for rows, k, cols in train_products(m, B)]
    plan = [ops[B] for B in batch_sizes]
    def run():
        for batch in plan:
            for a, b, c in batch:
                torch.mm(a, b, out=c)
    return run


def as_cuda_graph(run, device: torch.device):
    """`run` captured in one CUDA graph; the returned closure replays it (no per-kernel launch cost)."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):  # warm-up off the capture: cuBLAS picks kernels, allocates workspace
        run()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def floor_seconds(m: ModelConfig, batch_sizes: list[int], device: torch.device, repeats: int,
                  dtype: torch.dtype = torch.float32) -> float:
    """Best-of-`repeats` seconds of one epoch's matrix products (replayed as a CUDA graph on CUDA)."""
    run = epoch_products(m, batch_sizes, device, dtype)
    if device.type == "cuda":
        run = as_cuda_graph(run, device)
    return _best_of(run, device, repeats)


def probe(device_name: str, threads: int, repeats: int = 5, n_train: int = 60_000, precision: str = "float32",
          workload: str = "mlp-vae") -> dict:
    """The float32 peak and floor, and for a `tf32` (CUDA) or `bf16` run also those of its own arithmetic."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    m = ModelConfig()
    batch_sizes = m.batch_sizes(n_train)
    peak_n = 8192 if device.type == "cuda" else 2048
    torch_precision.set_tf32(False)  # the float32 figures are true float32 whatever the defaults
    out = {
        "framework": f"torch {torch.__version__}",
        "device": device_name,
        "threads": torch.get_num_threads(),
        "peak_matmul_size": peak_n,
        "peak_gflops": matmul_peak_gflops(device, peak_n, repeats),
    }
    if workload != m.workload:  # the floor's products are the MLP's; other workloads have none measured yet
        out["floor_note"] = f"not measured for {workload}: the floor probe knows the matrix products of {m.workload} only"
        return out
    out.update({
        "floor_seconds_per_epoch": floor_seconds(m, batch_sizes, device, repeats),
        "floor_method": "cuda-graph replay" if device.type == "cuda" else "eager loop",
        "floor_repeats": repeats,
        "floor_batches": len(batch_sizes),
    })
    if precision == "tf32" and device.type == "cuda":
        torch_precision.set_tf32(True)
        out["peak_gflops_tf32"] = matmul_peak_gflops(device, peak_n, repeats)
        out["floor_seconds_per_epoch_tf32"] = floor_seconds(m, batch_sizes, device, repeats)
        torch_precision.set_tf32(False)
    if precision == "bf16":
        out["peak_gflops_bf16"] = matmul_peak_gflops(device, peak_n, repeats, torch.bfloat16)
        out["floor_seconds_per_epoch_bf16"] = floor_seconds(m, batch_sizes, device, repeats, torch.bfloat16)
    return out


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    cores = sorted(os.sched_getaffinity(0))[: args["threads"]]
    os.sched_setaffinity(0, cores)
    print(json.dumps(probe(args["device"], len(cores), args.get("repeats", 5), args.get("n_train", 60_000),
                           precision=args.get("precision", "float32"), workload=args.get("workload", "mlp-vae"))))
