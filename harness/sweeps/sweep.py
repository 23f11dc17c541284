"""Sweeps: backend x device x seed x latent size, each job one `harness run`, handed to an executor.

`python -m harness sweep --backends torch,jax --device cpu --seeds 1-5 --epochs 3 --out DIR` expands the
spec into jobs and runs each through `runner.execute`, exactly what `harness run --out DIR/<job-id>` does
(same child process, same results.json, same params.npz). `DIR/sweep.json` (harness/sweeps/state.py)
is rewritten atomically after every job, so an interrupted sweep keeps every finished job and
`--resume DIR` reruns only the others. This module prepares the sweep folder, runs the unfinished jobs
and copies each outcome into its job; the spec, jobs and sweep.json live in harness/sweeps/state.py, the
statistical summary's rows and formatting in harness/sweeps/summary.py. Executors live in
harness/sweeps/executors.py; the Ray one is imported only when asked for.
"""
from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Callable

from harness import atomic
from harness.errors import HarnessError
from harness.execution.runner import Interrupted
from harness.measurement import measure
from harness.sweeps.state import FINISHED, SWEEP_FILE, JobOutcome, SweepJob, SweepSpec, SweepState, leaders, load, save
from harness.sweeps.summary import metric_names, summary_rows

# What importers read as sweep.<name>; the types and sweep.json I/O are re-exported from
# harness/sweeps/state.py, so callers that knew them here keep working.
__all__ = ["SWEEP_FILE", "JobOutcome", "SweepJob", "SweepSpec", "SweepState", "apply_outcome", "load",
           "prepare_dir", "run"]


# ------------------------------------------------------------------------------------ the sweep folder

def prepare_dir(sweep_dir: Path, jobs: list[SweepJob], *, resume: bool, force: bool) -> None:
    """Refuse to mix two sweeps in one folder (--force clears the old one's job folders); check it is writable."""
    if not resume and (sweep_dir / SWEEP_FILE).exists():
        if not force:
            raise HarnessError(f"{sweep_dir} already holds a sweep; use --resume to continue it, "
                               "--force to overwrite it, or another --out")
        try:
            old = load(sweep_dir).jobs
        except HarnessError:  # unreadable: clear the folders this sweep will use, nothing else
            old = []
        for job in old + jobs:  # job folders only: nothing else of the user's is touched
            shutil.rmtree(sweep_dir / job.run_dir, ignore_errors=True)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise HarnessError(f"--out {sweep_dir} exists and is not a folder")
    atomic.ensure_writable_dir(sweep_dir, "sweep folder")


# ------------------------------------------------------------------------------------ one job's outcome

def apply_outcome(job: SweepJob, outcome: JobOutcome) -> None:
    """Copy an executor's outcome and the job's own record into the sweep's entry for it."""
    job.status, job.error = outcome.status, outcome.error
    job.node, job.wall_seconds = outcome.node, outcome.wall_seconds
    job.work_seconds = job.overhead_seconds = None
    job.metrics = job.samples_per_second = job.throughput_basis = None
    if outcome.record is None or not outcome.record.results:
        return
    result = outcome.record.find(job.backend, job.device, job.seed)  # an ensemble's run holds every seed
    job.status, job.error, job.cores = result.status, result.error, result.cores
    if result.summary:
        job.metrics = {name: result.summary[f"final_{name}"] for name in result.epochs[-1].metrics}
        job.samples_per_second = result.summary["train_samples_per_second"]
        job.throughput_basis = measure.basis_of(result.summary)
    if result.epochs:
        job.work_seconds = (result.setup_seconds or 0.0) + result.epochs[-1].elapsed_seconds
        if job.wall_seconds is not None and not outcome.resumed:
            job.overhead_seconds = job.wall_seconds - job.work_seconds


# ------------------------------------------------------------------------------------ running

def run(state: SweepState, sweep_dir: Path, executor, *,
        say: Callable[[str], None] = lambda line: None) -> SweepState:
    """Run every unfinished job of `state` on `executor`; sweep.json is rewritten after each job."""
    from harness.measurement import stats  # pandas and SciPy: imported when a sweep runs, not by every command line
    todo = [j for j in state.jobs if j.status not in FINISHED]
    counter = iter(range(len(state.jobs) - len(todo) + 1, len(state.jobs) + 1))
    base, t0 = state.wall_seconds, time.perf_counter()

    def checkpoint() -> None:
        state.wall_seconds = base + (time.perf_counter() - t0)
        save(state, sweep_dir)

    groups = leaders(todo)  # an ensemble's seeds train as one run: its first job stands for all of them

    def on_start(job: SweepJob) -> None:
        for member in groups[job.run_dir]:
            member.status, member.error = "running", None
            member.attempts += 1
        checkpoint()

    def on_done(job: SweepJob, outcome: JobOutcome) -> None:
        for member in groups[job.run_dir]:
            apply_outcome(member, outcome)
        state.summary = stats.summarize(summary_rows(state.jobs), metric_names(state.spec))
        checkpoint()
        for member in groups[job.run_dir]:
            say(_job_line(next(counter), len(state.jobs), member))

    checkpoint()
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        executor.run([group[0] for group in groups.values()], state.spec, sweep_dir, on_start, on_done)
    except (KeyboardInterrupt, Interrupted):
        for job in todo:
            if job.status in ("pending", "running"):
                job.status, job.error = "interrupted", "the sweep was interrupted"
        checkpoint()
        raise Interrupted(f"interrupted; finished jobs are kept in {sweep_dir / SWEEP_FILE}; "
                          f"continue with: python -m harness sweep --resume {sweep_dir}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return state


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _job_line(i: int, n: int, job: SweepJob) -> str:
    where = f" on {job.node}" if job.node else ""
    if job.status == "ok" and job.metrics:
        name, value = next(iter(job.metrics.items()))
        what = f"{name} {value:.2f}, {job.samples_per_second:,.0f} samples/s"
    else:
        what = job.error or ""
    wall = f" ({job.wall_seconds:.1f} s)" if job.wall_seconds is not None else ""
    return f"[{i}/{n}] {job.id}: {job.status}{where}{wall}  {what}"
