"""`harness probe`: what this device can do at best, measured in a child process like the backends.

Records the float32 matmul peak (GFLOP/s on a large product) and the floor (seconds of the matrix
products alone of one training epoch, see backends/probe_torch.py; on CUDA replayed as one CUDA graph,
and with --allow-tf32 measured in TF32 too). Every run stores both, and each backend's steady s/epoch
is reported as a multiple of the floor: machines differ from session to session, so only ratios
measured in the same run are comparable. harness.floor decides which floor a run is held to and
whether it held.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from harness import measure
from harness.config import RunConfig
from harness.errors import HarnessError


def run(config: RunConfig, run_dir: Path | None = None, repeats: int = 5) -> dict | None:
    """Probe `config.device` with `config.threads`; None (with a note on stderr) when torch is absent."""
    if importlib.util.find_spec("torch") is None:
        print("probe skipped: it needs torch (pip install -e '.[torch]')", file=sys.stderr)
        return None
    n_train = config.train_limit or 60_000  # a run on a few samples (tests) is probed at its own size
    arg = json.dumps({"device": config.device, "threads": config.threads, "repeats": repeats,
                      "tf32": config.precision == "tf32", "n_train": n_train})
    proc = subprocess.run([sys.executable, "-m", "backends.probe_torch", arg], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise HarnessError(f"probe on {config.device} failed: {tail[0]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["train_flops_per_epoch"] = measure.train_flops_per_sample(config.model) * n_train
    result["floor_gflops"] = result["train_flops_per_epoch"] / result["floor_seconds_per_epoch"] / 1e9
    if result.get("floor_seconds_per_epoch_tf32"):
        result["floor_gflops_tf32"] = result["train_flops_per_epoch"] / result["floor_seconds_per_epoch_tf32"] / 1e9
    return result


def add_subcommands(sub) -> None:
    p = sub.add_parser("probe", help="measure the matmul peak and the per-epoch floor of a device")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--allow-tf32", action="store_true", help="also measure the TF32 peak and floor (CUDA)")
    p.add_argument("--train-limit", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_probe)


def cmd_probe(args, argv) -> int:
    import os
    from harness.console import console
    device = measure.resolve_device(args.device, ("torch",))
    threads = args.threads or len(os.sched_getaffinity(0))
    precision = "tf32" if args.allow_tf32 else "float32"
    config = RunConfig(device=device, threads=threads, precision=precision, train_limit=args.train_limit or 0)
    result = run(config, repeats=args.repeats)
    if result is None:
        return 1
    console.print(f"device {device}, {result['threads']} threads ({result['framework']})")
    console.print(f"float32 matmul peak ({result['peak_matmul_size']}^2): {result['peak_gflops']:.1f} GFLOP/s")
    console.print(f"floor ({result.get('floor_method', 'eager loop')}): {result['floor_seconds_per_epoch']:.4f} "
                  f"s/epoch for the matrix products of {result['floor_batches']} training steps "
                  f"({result['floor_gflops']:.1f} GFLOP/s)")
    if "floor_seconds_per_epoch_tf32" in result:
        console.print(f"TF32: matmul peak {result['peak_gflops_tf32']:.1f} GFLOP/s, floor "
                      f"{result['floor_seconds_per_epoch_tf32']:.4f} s/epoch ({result['floor_gflops_tf32']:.1f} GFLOP/s)")
    elif args.allow_tf32:
        console.print("TF32: not probed (TF32 exists on CUDA only)")
    return 0
