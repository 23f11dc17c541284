"""`harness probe`: what this device can do at best, measured in a child process like the backends.

Records the float32 matmul peak (GFLOP/s on a large product) and the floor (seconds of the matrix
products alone of one training epoch, see backends/probe_torch.py). Every run stores both, and each
backend's steady s/epoch is reported as a multiple of the floor: machines differ from session to
session, so only ratios measured in the same run are comparable.
"""
from __future__ import annotations

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
    arg = json.dumps({"device": config.device, "threads": config.threads, "repeats": repeats})
    proc = subprocess.run([sys.executable, "-m", "backends.probe_torch", arg], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise HarnessError(f"probe on {config.device} failed: {tail[0]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["train_flops_per_epoch"] = measure.train_flops_per_sample(config.model) * 60_000
    result["floor_gflops"] = result["train_flops_per_epoch"] / result["floor_seconds_per_epoch"] / 1e9
    return result


def add_subcommands(sub) -> None:
    p = sub.add_parser("probe", help="measure the matmul peak and the per-epoch floor of a device")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=cmd_probe)


def cmd_probe(args, argv) -> int:
    import os
    from harness.console import console
    device = measure.resolve_device(args.device)
    threads = args.threads or len(os.sched_getaffinity(0))
    result = run(RunConfig(device=device, threads=threads), repeats=args.repeats)
    if result is None:
        return 1
    console.print(f"device {device}, {result['threads']} threads ({result['framework']})")
    console.print(f"float32 matmul peak ({result['peak_matmul_size']}^2): {result['peak_gflops']:.1f} GFLOP/s")
    console.print(f"floor: {result['floor_seconds_per_epoch']:.3f} s/epoch for the matrix products of "
                  f"{result['floor_batches']} training steps ({result['floor_gflops']:.1f} GFLOP/s)")
    return 0
