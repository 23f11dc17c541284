"""How numbers are measured and summarised: FLOP counts, steady-state statistics, environment capture.

Conventions (see README "Measurement"):
- every timed window ends with a device synchronisation (a backend returns a Python float);
- `compile_seconds` (warm-up of every shape) and the first epoch are reported apart;
- steady state = the epochs after the first: median seconds per epoch with min and max;
- time to target = compile + training + eval seconds until the workload's primary metric (`test_loss`
  for the VAEs) first drops below the target;
- against the probe's ceilings: `x roofline` and MFU (harness.measurement.roofline).
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import __version__
from harness.config import RunConfig
from harness.measurement import roofline


def throughput_basis(n_epochs: int) -> str:
    """'steady' (median of the epochs after the first) or, for a run of one epoch, 'first epoch'."""
    return "steady" if n_epochs >= 2 else "first epoch"


def basis_of(summary: dict[str, Any]) -> str:
    """The throughput basis of a stored summary (records before the field existed: from steady_epochs)."""
    return summary.get("throughput_basis") or throughput_basis(int(summary.get("steady_epochs", 0)) + 1)


def seconds_cell(summary: dict[str, Any], spec: str = ".2f") -> str:
    """'median (min-max)' for a steady state, 'x (first epoch)' for a run that has none; '-' if empty."""
    if "steady_seconds_per_epoch" not in summary:
        return "-"
    median = format(summary["steady_seconds_per_epoch"], spec)
    if basis_of(summary) != "steady":
        return f"{median} (first epoch)"
    return f"{median} ({format(summary['steady_seconds_min'], spec)}-{format(summary['steady_seconds_max'], spec)})"


def summarize(epochs: list[dict], config: RunConfig, compile_seconds: float | None,
              probe: dict | None, n_train: int, repeat_seconds: list[float] = ()) -> dict[str, Any]:
    """Steady-state figures of one backend from its epoch records (dicts of EpochRecord fields) and
    the extra timed epochs of --repeats."""
    if not epochs:
        return {}
    # A 1-epoch run has no steady state: its figures are the first epoch's, and throughput_basis says so.
    steady = epochs[1:] or epochs
    secs = [e["train_seconds"] for e in steady] + list(repeat_seconds)
    evals = [e["eval_seconds"] for e in steady]
    median = statistics.median(secs)
    flops = config.model.spec().train_flops_per_sample(config.model) * n_train
    out: dict[str, Any] = {
        "steady_epochs": len(epochs) - 1,
        "throughput_basis": throughput_basis(len(epochs)),
        "repeats": len(repeat_seconds),
        "steady_seconds_per_epoch": median,
        "steady_seconds_min": min(secs),
        "steady_seconds_max": max(secs),
        "train_samples_per_second": n_train / median,
        "eval_samples_per_second": statistics.median(e["eval_samples_per_second"] for e in steady),
        "eval_seconds": statistics.median(evals),
        "train_gflops_per_second": flops / median / 1e9,
        "final_train_loss": epochs[-1]["train_loss"],
        **{f"final_{name}": value for name, value in epochs[-1]["metrics"].items()},
        "target_loss": config.target_loss,
        "time_to_target_seconds": next(  # the primary metric is the workload's first
            (e["elapsed_seconds"] for e in epochs if next(iter(e["metrics"].values())) < config.target_loss), None),
    }
    if not config.ensemble:  # an ensemble's epoch is N seeds' work: the reports divide by its recorded size
        out.update(roofline.figures(config, probe, out))  # x roofline, MFU, x torch products
    return out


# ---------------------------------------------------------------- environment

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The SIMD features that decide CPU matmul speed (AVX2/AVX-512/AMX differ between our machines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    return []


def git_info(root: Path | None = None) -> dict[str, Any]:
    """The commit of the project's own checkout (and whether tracked files differ from it).

    {"commit": "unknown", "dirty": None} when the source tree is not a git checkout of its own: a copy
    without .git inside another repository would otherwise report that repository's commit (seen on the
    H200 at b44716e), so the checkout's top level must be this source tree's root.
    """
    root = (root or Path(__file__).resolve().parents[2]).resolve()  # the folder holding harness/
    unknown = {"commit": "unknown", "dirty": None}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or Path(top).resolve() != root:
            return unknown
        commit = git("rev-parse", "--verify", "-q", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return unknown
    return {"commit": commit, "dirty": dirty} if commit else unknown


def gpu_info() -> list[dict[str, str]]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [dict(zip(("name", "driver", "memory"), map(str.strip, line.split(","))))
            for line in out.strip().splitlines() if line.strip()]
    return rows


def package_versions(names=("numpy", "torch", "jax", "jaxlib", "flax", "optax", "pandas", "rich")) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment() -> dict[str, Any]:
    """Everything about the machine and software that can change a number, framework-free."""
    return {
        "harness_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": len(os.sched_getaffinity(0)),
        "gpus": gpu_info(),
        "packages": package_versions(),
        "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                               "MKL_CBWR", "CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_PREALLOCATE")},
        "git": git_info(),
    }


