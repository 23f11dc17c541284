"""Where a job's wall time goes: its parts, measured, recorded per backend as `wall_seconds`.

A job (one backend in its own child process) is timed from the moment the runner starts it to the
moment it sees the child exit (`total`). The parts, in order:

- child_start: the runner writing the job file and starting the process, and the interpreter's own
  start-up, up to the first line of harness/execution/worker.py (parent and child clocks: time.time()
  of one host);
- interpreter_and_imports: the worker's imports (numpy, the harness) and the framework's import (torch,
  jax: backends.create);
- data_load: MNIST read and verified;
- framework_init: the backend's setup (framework and device initialisation, model, data onto the device,
  a resumed job's checkpoint), up to a device synchronisation;
- compile: the warm-up (compile_seconds);
- train, evaluate: the timed windows of every epoch (train_seconds, eval_seconds);
- repeats: `--repeats` epochs (0 without);
- write: checkpoints after every epoch and params.npz;
- shutdown: from the child's last event to its exit (interpreter and framework teardown);
- other: what is left (events, each epoch's permutation and noise arrays, the record of the settings).

The parts sum to `total`, `other` taking the remainder (never below 0). Every part is measured; a job
that ended early (failed, interrupted, timed out) has the parts its last event reported. A resumed job's figures
cover the resumed process only. Records written before this existed have no `wall_seconds` ({}).
"""
from __future__ import annotations

import time
from typing import Any

CHILD_PARTS = ("interpreter_and_imports", "data_load", "framework_init", "compile", "train", "evaluate",
               "repeats", "write")
PARTS = ("child_start", *CHILD_PARTS, "shutdown", "other")


class ChildClock:
    """The worker's side: seconds per part, and the wall-clock moments the runner needs."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at  # time.time() at the worker's first line
        self.seconds = dict.fromkeys(CHILD_PARTS, 0.0)

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] += seconds

    def since(self, part: str, t0: float) -> float:
        """Add perf_counter() - t0 to `part`; return perf_counter() (the next interval's start)."""
        now = time.perf_counter()
        self.add(part, now - t0)
        return now

    def snapshot(self) -> dict[str, Any]:
        """What an event carries: the parts so far, the start and the moment of sending."""
        return {"parts": dict(self.seconds), "started_at": self.started_at, "sent_at": time.time()}


def breakdown(job_started_at: float, job_ended_at: float, child: dict[str, Any] | None) -> dict[str, float]:
    """`wall_seconds` of one job from the runner's start and end and the child's last snapshot (None
    when the child sent none: then everything but the total is unknown and only `total` is recorded)."""
    total = max(0.0, job_ended_at - job_started_at)
    if not child:
        return {"total": total}
    parts = {"child_start": max(0.0, child["started_at"] - job_started_at), **child["parts"],
             "shutdown": max(0.0, job_ended_at - child["sent_at"])}
    parts["other"] = max(0.0, total - sum(parts.values()))
    return {**{k: parts.get(k, 0.0) for k in PARTS}, "total": total}


def process_started_at() -> float | None:
    """time.time() at which this process started (Linux /proc, 10 ms resolution); None elsewhere."""
    import os
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, after the command name
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def run_breakdown(process_started: float | None, execute_started: float, ended: float,
                  job_totals: list[float]) -> dict[str, float]:
    """The run's own `wall_seconds` (RunRecord): `harness_start` (the harness process's interpreter,
    imports, flag checks and MNIST lookup, up to the runner), `environment_and_probe` (the record's
    environment, the probe, the results file), `jobs` (the backends' totals) and `total`; the report,
    written after the record, is not in it. Without a process start time only the runner's part is known."""
    jobs = sum(job_totals)
    runner = max(0.0, ended - execute_started)
    out = {"environment_and_probe": max(0.0, runner - jobs), "jobs": jobs}
    if process_started is None:
        return {**out, "total": runner}
    return {"harness_start": max(0.0, execute_started - process_started), **out,
            "total": max(0.0, ended - process_started)}
