"""Hardware probe in PyTorch: the ceilings of the run's device and precision, measured, not looked up.

Started by harness.execution.probe through the one child launcher (child_process.call: `python -m
backends.torch.probe JOB_FILE`, answering through harness.channel), pinned to the run's cores and
thread count, so its figures are comparable with the backends'. It measures, as the Empirical Roofline Toolkit does with micro-kernels:

- the matrix peak: the best rate of n x n `torch.mm` (2 n^3 FLOPs) over a few sizes and of the torch
  products below, in the run's arithmetic (float32; also TF32 for a TF32 run, bf16 operands for bf16);
- the memory bandwidth: STREAM's Scale kernel in place (x *= -1 on a float32 buffer; bytes counted = 2 x
  the buffer, one read and one write, as STREAM counts), once on a buffer the size of the workload's
  per-step working set (the bandwidth the roofline divides by) and once on a large buffer (main memory,
  for the record); the roofline takes the larger;
- on CUDA, the cost of one kernel in a replayed CUDA graph of tiny kernels (the latency floor's unit).

Each ceiling is the best of many short timed calls in rounds spread over the probe (SAMPLE_SECONDS,
ROUNDS), so a busy shared machine still shows it. On CUDA every timed loop is captured once as a CUDA
graph and replayed, so launches do not count. The probe also keeps the old reference, "torch products":
the matrix products alone of one epoch's training steps at the run's own shapes (mlp-vae only; stored
under the `floor_*` keys of earlier versions).
"""
from __future__ import annotations

import importlib
import os
import sys
import time
import traceback

import torch

from backends.torch import precision as torch_precision
from harness.channel import Events, serve
from harness.config import ModelConfig, RunConfig
from harness.errors import HarnessError

# A ceiling is the best rate seen over many short timed calls, SAMPLE_SECONDS per size and round, in
# ROUNDS rounds spread over the probe: on a shared machine a short quiet moment is enough to see the
# real ceiling, and a ceiling seen too low would put the roofline above a backend that met a quieter one.
SAMPLE_SECONDS = {"cpu": 1.0, "cuda": 0.25}
ROUNDS = {"cpu": 3, "cuda": 1}
STREAM_BYTES_PER_CALL = {"cpu": 2**28, "cuda": 20 * 2**30}  # bytes counted per timed call
LARGE_BUFFER_BYTES = {"cpu": 256 * 2**20, "cuda": 2**30}  # well past the last-level cache
PEAK_SIZES = {"cpu": (512, 1024, 2048), "cuda": (4096, 8192)}  # the peak is the best of these squares
PEAK_FLOPS_PER_CALL = {"cpu": 2e9, "cuda": 2e12}
GRAPH_KERNELS = 1000  # tiny kernels per CUDA graph when timing one kernel's cost


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(fn, device: torch.device, repeats: int, seconds: float = 0.0) -> float:
    """The shortest of at least `repeats` timed calls of `fn`, going on until `seconds` have passed."""
    fn()  # warm-up: first touches, kernel selection
    _sync(device)
    best, calls, start = float("inf"), 0, time.perf_counter()
    while calls < repeats or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        _sync(device)
        best, calls = min(best, time.perf_counter() - t), calls + 1
    return best


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


def _timed(run, device: torch.device, repeats: int, seconds: float = 0.0) -> float:
    """Best seconds of `run` (see _best_of), replayed as a CUDA graph on CUDA."""
    return _best_of(as_cuda_graph(run, device) if device.type == "cuda" else run, device, repeats, seconds)


def matmul_gflops(device: torch.device, n: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of n x n torch.mm (2 n^3 FLOPs each), the best call over SAMPLE_SECONDS."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    inner = max(1, int(PEAK_FLOPS_PER_CALL[device.type] // (2 * n**3)))
    def run():
        for _ in range(inner):
            torch.mm(a, b, out=c)
    return 2 * n**3 * inner / _best_of(run, device, repeats, SAMPLE_SECONDS[device.type]) / 1e9


def matmul_peak_gflops(device: torch.device, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """The best GFLOP/s over PEAK_SIZES (a large product is not always the fastest: caches, blocking)."""
    return max(matmul_gflops(device, n, repeats, dtype) for n in PEAK_SIZES[device.type])


def stream_gbps(n_bytes: int, device: torch.device, repeats: int) -> float:
    """GB/s of STREAM Scale in place on a float32 buffer of `n_bytes`, counting a read and a write."""
    x = torch.ones(max(1, n_bytes // 4), device=device)
    counted = 2 * 4 * x.numel()
    inner = max(1, STREAM_BYTES_PER_CALL[device.type] // counted)
    def run():
        for _ in range(inner):
            x.mul_(-1.0)  # the sign flips: values stay +-1, never subnormal, never skippable
    return counted * inner / _timed(run, device, repeats, SAMPLE_SECONDS[device.type]) / 1e9


def kernel_seconds(device: torch.device, repeats: int) -> float:
    """Seconds per kernel in a replayed CUDA graph of GRAPH_KERNELS one-element additions."""
    x = torch.zeros(1, device=device)
    def run():
        for _ in range(GRAPH_KERNELS):
            x.add_(1.0)
    return _timed(run, device, repeats) / GRAPH_KERNELS


def epoch_products(products: dict[int, list[tuple[int, int, int]]], batch_sizes: list[int], device: torch.device,
                   dtype: torch.dtype = torch.float32):
    """A closure doing every matrix product of one epoch's steps (`products[B]`: (rows, inner, cols) of
    a step on B samples), on preallocated operands."""
    r = lambda *s: torch.randn(*s, device=device, dtype=dtype)
    ops = {B: [(r(rows, k), r(k, cols), torch.empty(rows, cols, device=device, dtype=dtype))
               for rows, k, cols in products[B]] for B in set(batch_sizes)}
    plan = [ops[B] for B in batch_sizes]
    def run():
        for batch in plan:
            for a, b, c in batch:
                torch.mm(a, b, out=c)
    return run


def product_list(m: ModelConfig, batch_sizes: list[int]) -> dict | None:
    """(rows, inner, cols) of every matrix product of a step, per batch size; None for a workload without
    a list (the convolutions of conv-vae are not matrix products)."""
    listing = getattr(importlib.import_module(m.spec().package), "train_products", None)
    return None if listing is None else {B: listing(m, B) for B in set(batch_sizes)}


def _arithmetics(device: torch.device, precision: str) -> list[tuple[str, torch.dtype, bool]]:
    """(key suffix, operand dtype, TF32 on) of every arithmetic the run's precision needs measured."""
    out = [("", torch.float32, False)]
    if precision == "tf32" and device.type == "cuda":
        out.append(("_tf32", torch.float32, True))
    if precision == "bf16":
        out.append(("_bf16", torch.bfloat16, False))
    return out


def _peaks_and_products(out: dict, device, m: ModelConfig, batch_sizes: list[int], precision: str, repeats: int,
                        round_: int) -> None:
    """One round of the peaks (the best so far is kept); in the first round also the torch products,
    whose rate counts as a candidate peak too: a matrix rate measured here like the squares."""
    products = product_list(m, batch_sizes)
    for suffix, dtype, tf32 in _arithmetics(device, precision):
        torch_precision.set_tf32(tf32)
        rates = [matmul_peak_gflops(device, repeats, dtype), out.get(f"peak_gflops{suffix}", 0.0)]
        if round_ == 0 and products:
            seconds = _timed(epoch_products(products, batch_sizes, device, dtype), device, repeats)
            out[f"floor_seconds_per_epoch{suffix}"] = seconds
            flops = sum(2 * r * k * c for B in batch_sizes for r, k, c in products[B])
            rates.append(flops / seconds / 1e9)
        torch_precision.set_tf32(False)
        out[f"peak_gflops{suffix}"] = max(rates)


def _bandwidths(out: dict, device, working: int, repeats: int) -> None:
    """One round of both bandwidths (the best so far is kept)."""
    for key, size in (("working_set", working), ("large", LARGE_BUFFER_BYTES[device.type])):
        out[f"bandwidth_{key}_bytes"] = size
        out[f"bandwidth_{key}_gbps"] = max(stream_gbps(size, device, repeats), out.get(f"bandwidth_{key}_gbps", 0.0))


def probe(job: dict) -> dict:
    """Every ceiling of `job` (harness.execution.probe writes it): device, threads, repeats, precision,
    the run's model and training-set size, the working-set bytes, and engines whose kernels to count."""
    device = torch.device(job["device"])
    repeats, precision = job.get("repeats", 5), job.get("precision", "float32")
    m = ModelConfig.from_dict(job["model"])
    batch_sizes = m.batch_sizes(job["n_train"])
    torch_precision.set_tf32(False)  # the float32 figures are true float32 whatever the defaults
    rounds, sample = ROUNDS[device.type], SAMPLE_SECONDS[device.type]
    out = {"framework": f"torch {torch.__version__}", "device": job["device"], "threads": torch.get_num_threads(),
           "workload": m.workload, "batch_size": m.batch_size, "peak_matmul_size": max(PEAK_SIZES[device.type]),
           "peak_method": (f"the best rate of torch.mm of n x n matrices, n in {PEAK_SIZES[device.type]} (2 n^3 "
                           f"FLOPs), and of the torch products below; {rounds} round(s) of at least {repeats} "
                           f"calls and {sample:g} s per size")}
    for round_ in range(rounds):
        _peaks_and_products(out, device, m, batch_sizes, precision, repeats, round_)
        _bandwidths(out, device, job["bandwidth_working_set"], repeats)
    if "floor_seconds_per_epoch" in out:
        out.update(floor_method="cuda-graph replay" if device.type == "cuda" else "eager loop",
                   floor_repeats=repeats, floor_batches=len(batch_sizes))
    else:
        out["floor_note"] = f"torch products not measured for {m.workload}: it lists no matrix products"
    out["bandwidth_method"] = ("STREAM Scale in place (x *= -1, float32), bytes counted = 2 x buffer (read + "
                               f"write); the best call of {rounds} round(s) of at least {repeats} calls and "
                               f"{sample:g} s" + (", replayed as a CUDA graph" if device.type == "cuda" else ""))
    out["bandwidth_gbps"] = max(out["bandwidth_working_set_gbps"], out["bandwidth_large_gbps"])
    if device.type == "cuda":
        out["kernel_seconds"] = kernel_seconds(device, repeats)
        out["kernel_method"] = f"replayed CUDA graph of {GRAPH_KERNELS} one-element adds, best of {repeats}"
        if job.get("count_kernels"):
            from backends.torch.kernel_count import kernels_per_step
            config = RunConfig.from_dict(job["config"])
            out["kernels_per_step"] = {name: kernels_per_step(name, config) for name in job["count_kernels"]}
    return out


def main(argv: list[str]) -> int:
    """The probe child (pinned to its cores by the parent): every ceiling as one `result` event, any
    failure as one error line (the traceback stays in the stderr log)."""
    def work(job: dict, events: Events) -> None:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        try:
            result = probe(job)
        except Exception as exc:
            traceback.print_exc()
            raise HarnessError(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
        events.send("result", **result)
    return serve(argv, work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
