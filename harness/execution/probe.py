"""`harness probe`: the ceilings of the run's device and precision, measured in a child process like the backends.

The child (the probing framework's module, backends/torch/probe.py) is started through the one child
launcher, harness.execution.child_process.call (job file, JSON-line events, framework_env, timeout,
one-line errors), pinned to the run's cores. It measures the matrix peak, the memory bandwidth and, on CUDA, one
kernel's cost; the run's own model (workload, sizes, batch size) and training-set size decide the
working set and the "torch products" reference. The record is the run's `probe`;
harness.measurement.roofline turns it into each backend's roofline, `x roofline` and MFU.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import backends
from harness import atomic
from harness.config import TRAIN_SIZE, RunConfig
from harness.errors import HarnessError
from harness.execution import child_process

TIMEOUT_SECONDS = 900.0  # a policy bound on a hung child; the CPU probe of a full epoch takes seconds


def job_of(config: RunConfig, repeats: int, count_kernels: tuple[str, ...] = ()) -> dict:
    """What the probe child needs: the device, threads and precision, the run's model and training-set
    size, the bytes of the step's working set, and the engines whose kernels to count (CUDA)."""
    m = config.model
    return {"device": config.device, "threads": config.threads, "repeats": repeats, "precision": config.precision,
            "model": m.to_dict(), "n_train": config.train_limit or TRAIN_SIZE,
            "bandwidth_working_set": m.spec().bandwidth_working_set(m, m.batch_size),
            "count_kernels": list(count_kernels), "config": config.to_dict()}


def run(config: RunConfig, run_dir: Path | None = None, repeats: int = 5,
        count_kernels: tuple[str, ...] = ()) -> dict | None:
    """Probe `config.device` with `config.threads` for `config`'s model and precision; None (with a note
    on stderr) when no framework with a probe is installed. `run_dir` is not written to."""
    prober = backends.probe_framework()
    if prober is None or not backends.installed(prober.name):
        need = f"{prober.name} (pip install -e '.[{prober.extra}]')" if prober else "a framework with a probe"
        print(f"probe skipped: it needs {need}", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory(prefix="vae-bench-probe-") as tmp:
        try:
            result = child_process.call(prober.probe, job_of(config, repeats, count_kernels), Path(tmp),
                                        TIMEOUT_SECONDS, cores=child_process.cores_for(config.threads))
        except HarnessError as exc:
            raise HarnessError(f"probe on {config.device} failed: {exc}") from None
    return with_work(result, config)


def with_work(result: dict, config: RunConfig) -> dict:
    """The probe's figures plus the run's work per epoch and the GFLOP/s of the products reference."""
    m, n_train = config.model, config.train_limit or TRAIN_SIZE
    result["train_flops_per_epoch"] = m.spec().train_flops_per_sample(m) * n_train
    for suffix in ("", "_tf32", "_bf16"):
        if result.get(f"floor_seconds_per_epoch{suffix}"):
            result[f"floor_gflops{suffix}"] = (result["train_flops_per_epoch"]
                                               / result[f"floor_seconds_per_epoch{suffix}"] / 1e9)
    return result


def save(result: dict, path: Path) -> None:
    """`harness probe --json PATH`: the record as the run's `probe` would hold it."""
    try:
        atomic.write_text(Path(path), json.dumps(result, indent=1))
    except OSError as exc:
        raise HarnessError(f"cannot write the probe to {path}: {exc.strerror or exc}") from None
