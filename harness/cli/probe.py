"""`harness probe`: the device's matrix-product peak and the epoch floor, on their own."""
from __future__ import annotations

import argparse

import backends
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.execution import devices
from harness.execution.probe import run


def add_subcommands(sub) -> None:
    p = sub.add_parser("probe", help="measure the matmul peak and the per-epoch floor of a device")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--allow-tf32", action="store_true", help="also measure the TF32 peak and floor (CUDA)")
    p.add_argument("--bf16", action="store_true", help="also measure the bf16 peak and floor")
    p.add_argument("--train-limit", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_probe)


def cmd_probe(args, argv) -> int:
    import os

    from harness.reporting.console import console
    prober = backends.probe_framework()  # the framework whose package holds the probe
    device = devices.resolve_device(args.device, (prober.name,) if prober else ())
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.allow_tf32 and args.bf16:
        raise HarnessError("--allow-tf32 and --bf16 are two precisions: probe one at a time")
    precision = "tf32" if args.allow_tf32 else "bf16" if args.bf16 else "float32"
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
    if "floor_seconds_per_epoch_bf16" in result:
        console.print(f"bf16: matmul peak {result['peak_gflops_bf16']:.1f} GFLOP/s, floor "
                      f"{result['floor_seconds_per_epoch_bf16']:.4f} s/epoch ({result['floor_gflops_bf16']:.1f} GFLOP/s)")
    return 0
