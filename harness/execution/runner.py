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
from pathlib import Path
from typing import Callable

import backends
from harness import atomic
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.execution import child_process
from harness.execution.jobs import Job, jobs_for, member_folder
from harness.measurement import results, walltime
from harness.measurement.measure import summarize
from harness.measurement.results import BackendResult, EpochRecord, RunRecord

STDERR_LOG = "stderr.log"
WORKER, ENSEMBLE_WORKER = "harness.execution.worker", "harness.execution.ensemble_worker"  # the children


class Interrupted(HarnessError):
    """Ctrl-C or SIGTERM: finished epochs are saved; `--resume DIR` continues."""


def new_record(config: RunConfig, environment: dict, command: str) -> RunRecord:
    return RunRecord(config=config.to_dict(), environment=environment, command=command,
                     results=[BackendResult(j.backend, j.device, s) for j in jobs_for(config) for s in j.seeds])


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
    if config.ensemble:  # an ensemble that cannot fit is one error line before anything starts
        from harness.execution import ensemble_memory
        ensemble_memory.check_fits(config.model, len(config.run_seeds()), config.train_limit or 60_000,
                                   config.test_limit or 10_000, ensemble_memory.host_available_bytes(),
                                   "this host's free memory")
    if resume:
        record = results.load(run_dir)
    else:
        from harness.measurement import measure
        record = new_record(config, environment or measure.environment(), command)
        if probe:
            from harness.execution import probe as probe_module
            record.probe = probe_module.run(config, run_dir)
    record = run_jobs(record, jobs_for(config), run_dir, data_dir, resume=resume, on_event=on_event)
    if probe and record.probe and not resume:
        # Ceilings are the best the machine does: a busy moment during one probe must not lower them
        # (a backend would seem faster than its roofline), so the run keeps the best of two probes.
        from harness.execution import probe as probe_module
        from harness.measurement.roofline import best_ceilings
        record.probe = best_ceilings(record.probe, probe_module.run(config, run_dir))
        for r in record.results:
            r.summary = summarize([dataclasses.asdict(e) for e in r.epochs], config, r.compile_seconds,
                                  record.probe, config.train_limit or 60_000, r.repeat_seconds)
        results.save(record, run_dir)
    return record


def run_jobs(record: RunRecord, jobs: list[Job], run_dir: Path, data_dir: Path, *, resume: bool = False,
             on_event: Callable[[BackendResult, dict], None] = lambda r, e: None) -> RunRecord:
    """Run every unfinished job in turn; the record is saved after each event."""
    results.save(record, run_dir)
    # Both signals stop the run cleanly. SIGINT is set explicitly too: a process started in the
    # background by a non-interactive shell inherits SIGINT as ignored, and Ctrl-C must still work.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for job in jobs:
            members = [record.find(job.backend, job.device, s) for s in job.seeds]
            if all(r.status == "ok" for r in members):
                continue
            try:
                _run_one(record, job, members, run_dir, data_dir, resume, on_event)
            except KeyboardInterrupt:
                _mark_interrupted(record, jobs)
                results.save(record, run_dir)
                raise Interrupted(f"interrupted; finished epochs are saved in {run_dir / results.RESULTS_FILE}; "
                                  f"continue with: python -m harness run --resume {run_dir}") from None
            results.save(record, run_dir)
            for result in members:
                on_event(result, {"event": "finished"})
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return record


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _mark_interrupted(record: RunRecord, jobs: list[Job]) -> None:
    for job in jobs:
        for seed in job.seeds:
            r = record.find(job.backend, job.device, seed)
            if r.status in ("pending", "running"):
                r.status, r.error = "interrupted", (f"interrupted after {len(r.epochs)} epoch(s)")


def _run_one(record: RunRecord, job: Job, members: list[BackendResult], run_dir: Path, data_dir: Path,
             resume: bool, on_event) -> None:
    """Train one job in its child; its events update the results of its seeds (one, or an ensemble's)."""
    spec = backends.REGISTRY[job.backend]
    if importlib.util.find_spec(spec.framework) is None:
        for result in members:
            result.status = "unavailable"
            result.error = f"{spec.framework} is not installed; install it with: pip install -e '.[{spec.extra}]'"
            on_event(result, {"event": "unavailable"})
        return
    started_at = time.time()  # the job's wall time starts here (harness.measurement.walltime)
    folder = job.folder(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    several = len(job.config.run_seeds()) > 1
    job_file = folder / "job.json"
    atomic.write_json(job_file, {"backend": job.backend, "device": job.device, "seed": job.seed,
                                 "seeds": list(job.ensemble), "config": job.config.to_dict(),
                                 "job_dir": str(folder), "data_dir": str(data_dir), "resume": resume,
                                 # where each seed's checkpoint and params go, relative to the backend's folder
                                 "member_dirs": {str(s): member_folder(s) if several else "" for s in job.seeds},
                                 "backend_dir": str(run_dir / job.backend),
                                 # the cores this run may use: a concurrent GPU job's share (executors)
                                 "cores": sorted(os.sched_getaffinity(0))})
    for result in members:
        result.status, result.error, result.stderr_tail = "running", None, None
        if not resume:
            result.epochs = []
    by_seed = {r.seed: r for r in members}
    n_train = job.config.train_limit or 60_000
    last_wall: dict = {}  # the child's latest wall-time snapshot

    def handle(event: dict) -> None:
        if "wall" in event:
            last_wall.update(event["wall"])
        # an event naming a seed is that member's; the others (start, setup, compile, errors) are everyone's
        for result in [by_seed[event["seed"]]] if "seed" in event else members:
            if result.status in ("running", "ok") or event["event"] in ("ensemble",):
                _apply_event(result, event, record.probe, job.config, n_train)
                on_event(result, event)
        results.save(record, run_dir)

    try:
        code, timed_out = child_process.run(job_file, folder / STDERR_LOG, job.config.timeout, handle,
                                            module=ENSEMBLE_WORKER if job.ensemble else WORKER,
                                            cores=child_process.cores_for(job.config.threads))
    finally:  # interrupted too: the parts it reached
        wall = walltime.breakdown(started_at, time.time(), last_wall or None)
        for result in members:
            result.wall_seconds = wall
    for result in members:
        _close(result, job, folder, code, timed_out)


def _close(result: BackendResult, job: Job, folder: Path, code: int | None, timed_out: bool) -> None:
    """A result the child left running (it ended without done, diverged or error) becomes a failure."""
    if result.status == "running":
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
    elif kind == "ensemble":  # the whole ensemble's figures, for each member's record
        r.backend_info = {**r.backend_info, "ensemble": ev["ensemble"]}
    elif kind == "done":
        r.status, r.params_file = "ok", ev["params_file"]
        r.memory.update(ev["memory"])
    elif kind == "error":
        r.status, r.error = "failed", ev["message"]
    r.summary = summarize([dataclasses.asdict(e) for e in r.epochs], config, r.compile_seconds, probe, n_train,
                          r.repeat_seconds)
