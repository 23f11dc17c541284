"""`harness probe`: what this device can do at best, measured in a child process like the backends.

Records the float32 matmul peak (GFLOP/s on a large product) and the floor (seconds of the matrix
products alone of one training epoch, see backends/torch/probe.py; on CUDA replayed as one CUDA graph;
for a TF32 or bf16 run measured in that arithmetic too). Every run stores both, and each backend's steady s/epoch
is reported as a multiple of the floor: machines differ from session to session, so only ratios
measured in the same run are comparable. harness.measurement.floor decides which floor a run is held to and
whether it held.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import backends
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.execution.child_env import framework_env


def run(config: RunConfig, run_dir: Path | None = None, repeats: int = 5) -> dict | None:
    """Probe `config.device` with `config.threads`; None (with a note on stderr) when no framework with a
    probe is installed."""
    prober = backends.probe_framework()
    if prober is None or not backends.installed(prober.name):
        need = f"{prober.name} (pip install -e '.[{prober.extra}]')" if prober else "a framework with a probe"
        print(f"probe skipped: it needs {need}", file=sys.stderr)
        return None
    n_train = config.train_limit or 60_000  # a run on a few samples (tests) is probed at its own size
    arg = json.dumps({"device": config.device, "threads": config.threads, "repeats": repeats,
                      "precision": config.precision, "n_train": n_train,
                      "workload": config.model.workload})
    proc = subprocess.run([sys.executable, "-m", prober.probe, arg], capture_output=True, text=True,
                          env=framework_env())  # the same BLAS settings as the training workers
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise HarnessError(f"probe on {config.device} failed: {tail[0]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["train_flops_per_epoch"] = config.model.spec().train_flops_per_sample(config.model) * n_train
    if "floor_seconds_per_epoch" not in result:  # no floor for this workload (floor_note says why)
        return result
    result["floor_gflops"] = result["train_flops_per_epoch"] / result["floor_seconds_per_epoch"] / 1e9
    for precision in ("tf32", "bf16"):
        if result.get(f"floor_seconds_per_epoch_{precision}"):
            result[f"floor_gflops_{precision}"] = (result["train_flops_per_epoch"]
                                                   / result[f"floor_seconds_per_epoch_{precision}"] / 1e9)
    return result


