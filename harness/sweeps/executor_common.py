"""What the sweep executors (harness/sweeps/local.py, harness/sweeps/ray_executor.py) share.

A module of its own, so that both executors and the factory in harness/sweeps/executors.py can import it
without an import cycle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness.measurement import results
from harness.sweeps.state import JobOutcome, SweepJob

GPU_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}

OnStart = Callable[[SweepJob], None]
OnDone = Callable[[SweepJob, JobOutcome], None]


def job_outcome(run_dir: Path, wall_seconds: float, node: str) -> JobOutcome:
    """The outcome of a job whose folder holds its results.json (the job's own record of itself)."""
    record = results.load(run_dir)
    return JobOutcome(status=record.results[0].status, record=record, wall_seconds=wall_seconds, node=node)
