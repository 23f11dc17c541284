"""`harness probe`: the device's ceilings (matrix peak, bandwidth, CUDA kernel cost) and a model's roofline."""
from __future__ import annotations

import argparse

import backends
import workloads
from harness.config import ModelConfig, RunConfig
from harness.errors import HarnessError
from harness.execution import devices
from harness.execution.probe import run, save
from harness.measurement import roofline


def add_subcommands(sub) -> None:
    p = sub.add_parser("probe", help="measure the ceilings of a device and the roofline of an epoch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workload", choices=workloads.names(), default=workloads.DEFAULT)
    p.add_argument("--batch-size", type=int, default=ModelConfig.batch_size)
    p.add_argument("--allow-tf32", action="store_true", help="also measure the TF32 peak (CUDA)")
    p.add_argument("--bf16", action="store_true", help="also measure the bf16 peak")
    p.add_argument("--count-kernels", default="", metavar="BACKENDS",
                   help="CUDA: count the kernels per step of these engines (comma-separated), for the latency floor")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the probe record to PATH")
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
    if args.batch_size < 1:
        raise HarnessError(f"--batch-size must be at least 1, got {args.batch_size}")
    count = tuple(filter(None, (b.strip() for b in args.count_kernels.split(","))))
    backends.check_names(list(count))
    if count and not device.startswith("cuda"):
        raise HarnessError("--count-kernels counts CUDA kernels: it needs --device cuda")
    precision = "tf32" if args.allow_tf32 else "bf16" if args.bf16 else "float32"
    config = RunConfig(device=device, threads=threads, precision=precision, train_limit=args.train_limit or 0,
                       model=ModelConfig(workload=args.workload, batch_size=args.batch_size))
    result = run(config, repeats=args.repeats, count_kernels=count)
    if result is None:
        return 1
    if args.json:
        save(result, args.json)
    for line in describe(result, config):
        console.print(line)
    return 0


def describe(probe: dict, config: RunConfig) -> list[str]:
    """What the probe measured and the roofline it gives `config`'s epoch, one line each."""
    out = [f"device {probe['device']}, {probe['threads']} threads ({probe['framework']})",
           f"float32 matrix peak: {probe['peak_gflops']:.1f} GFLOP/s ({probe['peak_method']})"]
    for suffix in ("tf32", "bf16"):
        if f"peak_gflops_{suffix}" in probe:
            out.append(f"{suffix} matrix peak: {probe[f'peak_gflops_{suffix}']:.1f} GFLOP/s")
    out.append(f"bandwidth: {probe['bandwidth_working_set_gbps']:.1f} GB/s at the step's working set "
               f"({probe['bandwidth_working_set_bytes']:,} bytes), {probe['bandwidth_large_gbps']:.1f} GB/s at "
               f"{probe['bandwidth_large_bytes']:,} bytes ({probe['bandwidth_method']})")
    if "kernel_seconds" in probe:
        out.append(f"one kernel in a replayed CUDA graph: {probe['kernel_seconds'] * 1e6:.2f} us")
    for name, n in (probe.get("kernels_per_step") or {}).items():
        out.append(f"{name}: {n:.1f} device operations per step")
    roof = roofline.epoch_roofline(config, probe)
    if roof is not None:
        out.append(f"roofline of one {config.model.workload} epoch ({roof.steps} steps of batch "
                   f"{config.model.batch_size}, {config.precision}): {roof.seconds:.4f} s (compute "
                   f"{roof.compute_seconds:.4f} s, memory {roof.memory_seconds:.4f} s)")
    for suffix, label in (("", "float32"), ("_tf32", "TF32"), ("_bf16", "bf16")):
        if f"floor_seconds_per_epoch{suffix}" in probe:
            out.append(f"torch products ({label}, a reference, not a bound): "
                       f"{probe[f'floor_seconds_per_epoch{suffix}']:.4f} s/epoch")
    return out
