"""Runs a list of jobs, each in its own child process, and keeps DIR/results.json current.

A job is one backend on one device with one seed. `harness run` is a short list of jobs; a sweep is a
longer one. The runner owns the results file: it rewrites it atomically after every event from a child,
so nothing finished is lost when a child crashes, times out, or the user presses Ctrl-C. Starting,
reading and stopping the child process is harness/execution/child_process.py; this module turns its
events into the job's result.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import backends
from harness import atomic
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.execution import child_process
from harness.measurement import results, walltime
from harness.measurement.measure import summarize
from harness.measurement.results import BackendResult, EpochRecord, RunRecord

STDERR_LOG = "stderr.log"


class Interrupted(HarnessError):
    """Ctrl-C or SIGTERM: finished epochs are saved; `--resume DIR` continues."""


@dataclass(frozen=True)
class Job:
    """One backend on one device with one seed, trained by one child process."""

    backend: str
    device: str
    seed: int
    config: RunConfig

    def folder(self, run_dir: Path) -> Path:
        return run_dir / self.backend


def jobs_for(config: RunConfig) -> list[Job]:
    return [Job(b, config.device, config.seed, config) for b in config.backends]


def new_record(config: RunConfig, environment: dict, command: str) -> RunRecord:
    return RunRecord(config=config.to_dict(), environment=environment, command=command,
                     results=[BackendResult(j.backend, j.device, j.seed) for j in jobs_for(config)])


def prepare_run_dir(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse to mix two runs in one folder; check it is writable before any work starts."""
    has_run = (run_dir / results.RESULTS_FILE).exists()
    if resume and not has_run:
        raise HarnessError(f"--resume {run_dir}: no {results.RESULTS_FILE} there to resume")
    if has_run and not (resume or force):
        raise HarnessError(f"{run_dir} already holds a run; use --resume to continue it, "
                           "--force to overwrite it, or another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise HarnessError(f"--out {run_dir} exists and is not a folder")
    atomic.ensure_writable_dir(run_dir, "output folder")


def execute(config: RunConfig, run_dir: Path, data_dir: Path, *, command: str = "", resume: bool = False,
            probe: bool = False, on_event: Callable[[BackendResult, dict], None] = lambda r, e: None,
            environment: dict | None = None) -> RunRecord:
    """The whole of one `harness run`: the record (new or resumed), the optional probe, every job.

    Sweeps call exactly this for each of their jobs, so a sweep job and a run are the same thing.
    """
    if resume:
        record = results.load(run_dir)
    else:
        from harness.measurement import measure
        record = new_record(config, environment or measure.environment(), command)
        if probe:
            from harness.execution import probe as probe_module
            record.probe = probe_module.run(config, run_dir)
    return run_jobs(record, jobs_for(config), run_dir, data_dir, resume=resume, on_event=on_event)


def run_jobs(record: RunRecord, jobs: list[Job], run_dir: Path, data_dir: Path, *, resume: bool = False,
             on_event: Callable[[BackendResult, dict], None] = lambda r, e: None) -> RunRecord:
    """Run every unfinished job in turn; the record is saved after each event."""
    results.save(record, run_dir)
    # Both signals stop the run cleanly. SIGINT is set explicitly too: a process started in the
    # background by a non-interactive shell inherits SIGINT as ignored, and Ctrl-C must still work.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for job in jobs:
            result = record.find(job.backend, job.device, job.seed)
            if result.status == "ok":
                continue
            try:
                _run_one(record, job, result, run_dir, data_dir, resume, on_event)
            except KeyboardInterrupt:
                _mark_interrupted(record, jobs)
                results.save(record, run_dir)
                raise Interrupted(f"interrupted; finished epochs are saved in {run_dir / results.RESULTS_FILE}; "
                                  f"continue with: python -m harness run --resume {run_dir}") from None
            results.save(record, run_dir)
            on_event(result, {"event": "finished"})
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return record


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _mark_interrupted(record: RunRecord, jobs: list[Job]) -> None:
    for job in jobs:
        r = record.find(job.backend, job.device, job.seed)
        if r.status in ("pending", "running"):
            r.status, r.error = "interrupted", (f"interrupted after {len(r.epochs)} epoch(s)")


def _run_one(record: RunRecord, job: Job, result: BackendResult, run_dir: Path, data_dir: Path,
             resume: bool, on_event) -> None:
    spec = backends.REGISTRY[job.backend]
    if importlib.util.find_spec(spec.framework) is None:
        result.status = "unavailable"
        result.error = f"{spec.framework} is not installed; install it with: pip install -e '.[{spec.extra}]'"
        on_event(result, {"event": "unavailable"})
        return
    started_at = time.time()  # the job's wall time starts here (harness.measurement.walltime)
    folder = job.folder(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    job_file = folder / "job.json"
    atomic.write_json(job_file, {"backend": job.backend, "device": job.device, "seed": job.seed,
                                 "config": job.config.to_dict(), "job_dir": str(folder),
                                 "data_dir": str(data_dir), "resume": resume,
                                 # the cores this run may use: a concurrent GPU job's share (executors)
                                 "cores": sorted(os.sched_getaffinity(0))})
    result.status, result.error, result.stderr_tail = "running", None, None
    if not resume:
        result.epochs = []
    n_train = job.config.train_limit or 60_000

    last_wall: dict = {}  # the child's latest wall-time snapshot

    def handle(event: dict) -> None:
        if "wall" in event:
            last_wall.update(event["wall"])
        _apply_event(result, event, record.probe, job.config, n_train)
        results.save(record, run_dir)
        on_event(result, event)

    try:
        code, timed_out = child_process.run(job_file, folder / STDERR_LOG, job.config.timeout, handle,
                                            cores=child_process.cores_for(job.config.threads))
    finally:  # interrupted too: the parts it reached
        result.wall_seconds = walltime.breakdown(started_at, time.time(), last_wall or None)
    if result.status == "running":  # the child ended without saying done, diverged or error
        result.status = "failed"
        if timed_out:
            result.error = f"timed out after {job.config.timeout:g} s (--timeout)"
        elif code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            result.error = f"child process killed by {name}{hint}"
        else:
            result.error = f"child process exited with code {code}"
        result.stderr_tail = child_process.tail(folder / STDERR_LOG)
    elif result.status == "failed":
        result.stderr_tail = child_process.tail(folder / STDERR_LOG)


def _apply_event(r: BackendResult, ev: dict, probe, config: RunConfig, n_train: int) -> None:
    kind = ev["event"]
    if kind == "started":
        r.threads, r.cores = ev["threads"], ev.get("cores")
    elif kind == "resumed":
        r.epochs = [e for e in r.epochs if e.epoch < ev["epoch"]] + [EpochRecord.from_dict(ev["record"])]
    elif kind == "setup":
        r.setup_seconds, r.backend_info = ev["setup_seconds"], ev["backend_info"]
        r.memory.update(ev["memory"])
    elif kind == "compiled":
        if r.compile_seconds is None:  # a resumed job compiles again; the first figure stands
            r.compile_seconds, r.compile_cache = ev["compile_seconds"], ev.get("compile_cache")
    elif kind == "epoch":
        rec = EpochRecord.from_dict(ev["record"])
        r.epochs = [e for e in r.epochs if e.epoch < rec.epoch] + [rec]
        if rec.epoch == 1:
            r.first_epoch_seconds = rec.train_seconds
        r.memory.update(ev["memory"])
    elif kind == "diverged":
        r.status = "diverged"
        r.error = (f"diverged at epoch {ev['epoch']} (losses {', '.join(ev['losses'])}); "
                   f"last finite train loss {ev['last_finite_loss']}")
    elif kind == "repeats":
        r.repeat_seconds = ev["train_seconds"]
    elif kind == "done":
        r.status, r.params_file = "ok", ev["params_file"]
        r.memory.update(ev["memory"])
    elif kind == "error":
        r.status, r.error = "failed", ev["message"]
    r.summary = summarize([dataclasses.asdict(e) for e in r.epochs], config, r.compile_seconds, probe, n_train,
                          r.repeat_seconds)
