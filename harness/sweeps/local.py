"""The local executor: CPU jobs one at a time on this machine, then 'cuda' jobs one per GPU at once, each in
a process pinned to its GPU and its own share of the cores (see harness/sweeps/executors.py).
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections import deque
from pathlib import Path

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.execution import runner
from harness.measurement import measure, results
from harness.sweeps import placement
from harness.sweeps.executor_common import GPU_ENV, OnDone, OnStart, job_outcome
from harness.sweeps.state import JobOutcome, SweepJob, SweepSpec


def run_local_job(config_dict: dict, run_dir: str, data_dir: str, command: str,
                  environment: dict | None) -> JobOutcome:
    """One job in `run_dir`, exactly as `harness run` (or `harness run --resume`, if it ran before) does it."""
    t = time.perf_counter()
    folder = Path(run_dir)
    resume = (folder / results.RESULTS_FILE).exists()  # a failed or interrupted job continues in place
    try:
        runner.prepare_run_dir(folder, resume=resume, force=not resume)
        runner.execute(RunConfig.from_dict(config_dict), folder, Path(data_dir), command=command,
                       resume=resume, probe=False, environment=environment)
    except runner.Interrupted:
        raise
    except HarnessError as exc:
        return JobOutcome(status="failed", error=str(exc), wall_seconds=time.perf_counter() - t)
    outcome = job_outcome(folder, time.perf_counter() - t, socket.gethostname())
    outcome.resumed = resume
    return outcome


class LocalExecutor:
    """This machine: CPU jobs one at a time, then GPU jobs one per GPU at once."""

    name = "local"

    def __init__(self, mnist_dir: Path, command: str):
        self.mnist_dir, self.command = mnist_dir, command
        self.environment = measure.environment()  # one machine: captured once, not per job

    def run(self, jobs: list[SweepJob], spec: SweepSpec, sweep_dir: Path, on_start: OnStart,
            on_done: OnDone) -> None:
        threads = spec.base.threads or len(os.sched_getaffinity(0))
        cpu = [j for j in jobs if j.device == "cpu"]
        gpu = [j for j in jobs if j.device != "cpu"]
        for job in cpu:
            on_start(job)
            on_done(job, run_local_job(spec.job_config(job, threads).to_dict(), str(sweep_dir / job.run_dir),
                                       str(self.mnist_dir), self._command(job), self.environment))
        if gpu:
            slots = placement.gpu_slots(visible_gpus(), sorted(os.sched_getaffinity(0)))
            self.run_pinned(gpu, spec, sweep_dir, slots, spec.base.threads, on_start, on_done)

    def run_pinned(self, jobs: list[SweepJob], spec: SweepSpec, sweep_dir: Path, slots: list[placement.Slot],
                   threads: int, on_start: OnStart, on_done: OnDone) -> None:
        """Run `jobs` concurrently, one per slot, each in a process pinned to that slot's GPU and cores
        with at most `threads` threads (0 = all of the slot's cores)."""
        if not slots:
            raise HarnessError("device cuda: no GPU visible (nvidia-smi lists none)")
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or CUDA state
        queue, free = deque(jobs), list(range(len(slots)))
        running: dict = {}  # receiving pipe end -> (job, slot, process)
        try:
            while queue or running:
                while queue and free:
                    job, slot = queue.popleft(), free.pop(0)
                    receive, send = ctx.Pipe(duplex=False)
                    config = spec.job_config(job, placement.job_threads(threads, slots[slot]))
                    args = (slots[slot], send, config.to_dict(),
                            str(sweep_dir / job.run_dir), str(self.mnist_dir), self._command(job),
                            self.environment)
                    proc = ctx.Process(target=_pinned_child, args=args, name=f"vae-bench {job.id}")
                    on_start(job)
                    proc.start()
                    send.close()
                    running[receive] = (job, slot, proc)
                for receive in multiprocessing.connection.wait(list(running)):
                    job, slot, proc = running.pop(receive)
                    outcome = _receive(receive, proc)
                    free.append(slot)
                    if outcome.status == "interrupted":
                        raise KeyboardInterrupt
                    on_done(job, outcome)
        finally:
            for job, slot, proc in running.values():  # on interrupt: each child saves its job, then ends
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)
            for job, slot, proc in running.values():
                proc.join()

    def _command(self, job: SweepJob) -> str:
        return f"{self.command}  # job {job.id}"


def _pinned_child(slot: placement.Slot, send, config_dict: dict, run_dir: str, data_dir: str, command: str,
                  environment: dict) -> None:
    """Body of one pinned process: take the slot's GPU and cores, run the job, send the outcome back.

    The job's own processes inherit the affinity, and the runner writes it into each job spec."""
    env = {"CUDA_VISIBLE_DEVICES": slot.gpu, **GPU_ENV}
    os.environ.update(env)
    os.sched_setaffinity(0, slot.cores)
    environment = {**environment, "env": {**environment.get("env", {}), **env}}
    try:
        outcome = run_local_job(config_dict, run_dir, data_dir, command, environment)
    except (runner.Interrupted, KeyboardInterrupt):
        outcome = JobOutcome(status="interrupted", error="interrupted")
    send.send(outcome)
    send.close()


def _receive(receive, proc) -> JobOutcome:
    try:
        outcome = receive.recv()
    except EOFError:  # the process died before it could answer
        proc.join()
        return JobOutcome(status="failed", error=f"job process ended with exit code {proc.exitcode}")
    proc.join()
    return outcome


def visible_gpus() -> list[str]:
    """GPU ids to pin jobs to: $CUDA_VISIBLE_DEVICES's entries if set, else every GPU nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    return [str(i) for i in range(len(measure.gpu_info()))]
