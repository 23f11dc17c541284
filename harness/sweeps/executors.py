"""Executors run a sweep's jobs: `local` on this machine, `ray` as Ray core tasks on a cluster.

Both run each job through `runner.execute`, the whole of one `harness run` (a child process per job),
and report every finished job to the driver, which alone writes the sweep folder.

- local: CPU jobs one at a time, because a timing job needs every core. 'cuda' jobs run one per GPU at
  once, each in its own process pinned with CUDA_VISIBLE_DEVICES (and XLA_PYTHON_CLIENT_PREALLOCATE=false,
  so JAX does not grab the memory up front) and to its own equal share of the cores (harness.sweeps.placement).
  CPU jobs run first, alone, then the GPU jobs.
- ray: a CPU job asks for every CPU of a node (the smallest node's count, so it fits on any node) so its
  timings stay clean; a GPU job asks for one GPU. The driver puts the verified MNIST files in the object
  store once; the task writes them to a temporary folder on its node (the child re-verifies the MD5s),
  runs the job there and returns the job folder's files, which the driver writes to DIR/<job-id>/. A task
  whose worker or node dies is retried by Ray (max_retries); a job that fails for itself is recorded as
  failed with its error while the others go on. `import ray` happens only here, only when asked for.
"""
from __future__ import annotations

import importlib.util
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Callable

from harness import atomic, data
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.execution import runner
from harness.measurement import measure, results
from harness.sweeps import placement
from harness.sweeps.sweep import JobOutcome, SweepJob, SweepSpec

RAY_MISSING = "executor 'ray' needs the ray extra: pip install -e '.[ray]'"
# Environment variables that change a timing; the driver's values are applied on every Ray node, so a
# job sees the same settings whichever executor runs it (Ray itself sets OMP_NUM_THREADS on its workers).
PROPAGATED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
GPU_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
# A checkpoint serves `harness run --resume` of a job in place; a Ray job is rerun whole, so it stays behind.
NOT_RETURNED = ("checkpoint.npz",)

OnStart = Callable[[SweepJob], None]
OnDone = Callable[[SweepJob, JobOutcome], None]


def create(spec: SweepSpec, data_dir: str | None, command: str):
    """The executor `spec` names, with the verified MNIST folder located (and fetched) up front."""
    if spec.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise HarnessError(RAY_MISSING)
    mnist_dir, _ = data.locate(data_dir)
    if spec.executor == "ray":
        return RayExecutor(mnist_dir, command, spec.address, spec.max_retries)
    return LocalExecutor(mnist_dir, command)


def job_outcome(run_dir: Path, wall_seconds: float, node: str) -> JobOutcome:
    """The outcome of a job whose folder holds its results.json (the job's own record of itself)."""
    record = results.load(run_dir)
    return JobOutcome(status=record.results[0].status, record=record, wall_seconds=wall_seconds, node=node)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ------------------------------------------------------------------------------------------ local

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
        threads = spec.threads or len(os.sched_getaffinity(0))
        cpu = [j for j in jobs if j.device == "cpu"]
        gpu = [j for j in jobs if j.device != "cpu"]
        for job in cpu:
            on_start(job)
            on_done(job, run_local_job(spec.job_config(job, threads).to_dict(), str(sweep_dir / job.run_dir),
                                       str(self.mnist_dir), self._command(job), self.environment))
        if gpu:
            slots = placement.gpu_slots(visible_gpus(), sorted(os.sched_getaffinity(0)))
            self.run_pinned(gpu, spec, sweep_dir, slots, spec.threads, on_start, on_done)

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


# ------------------------------------------------------------------------------------------ ray

def mnist_files(mnist_dir: Path) -> dict[str, bytes]:
    """The four verified files of `mnist_dir` as they are stored (.gz or plain), by file name."""
    out = {}
    for name, _, _ in data.FILES.values():
        path = next(p for p in (mnist_dir / name, mnist_dir / f"{name}.gz") if p.is_file())
        out[path.name] = path.read_bytes()
    return out


def run_ray_job(config_dict: dict, mnist: dict[str, bytes], env: dict[str, str | None], command: str) -> dict:
    """The Ray task: one job in a temporary folder of its node; returns the job folder's files.

    Runs in a Ray worker on any node. The config's threads, if 0, become the CPUs Ray assigned to the
    task (every CPU of a node for a CPU job), so the job uses exactly what it reserved.
    """
    import ray

    started = time.time()
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    config = RunConfig.from_dict(config_dict)
    if not config.threads:
        assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
        threads = int(assigned) if config.device == "cpu" else 0
        config = RunConfig.from_dict({**config_dict, "threads": threads or len(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory(prefix="vae-bench-job-") as tmp:
        mnist_dir, run_dir = Path(tmp) / "mnist", Path(tmp) / "job"
        mnist_dir.mkdir()
        for name, blob in mnist.items():  # a private folder: no need for atomic writes (or their fsync)
            (mnist_dir / name).write_bytes(blob)
        runner.prepare_run_dir(run_dir, resume=False, force=False)
        runner.execute(config, run_dir, mnist_dir, command=command, probe=False)
        files = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
                 if p.is_file() and p.name not in NOT_RETURNED}
    node = f"{socket.gethostname()} (ray node {ray.get_runtime_context().get_node_id()[:8]})"
    return {"files": files, "node": node, "started": started}


def job_resources(ray, jobs: list[SweepJob]) -> list[dict]:
    """What each job asks Ray for: every CPU of a node (CPU job) or one GPU; checked before any submission."""
    cpus = node_cpus(ray) if any(j.device == "cpu" for j in jobs) else 0
    if any(j.device != "cpu" for j in jobs) and not ray.cluster_resources().get("GPU"):
        raise HarnessError("device cuda: the Ray cluster has no GPU")
    return [{"num_cpus": cpus, "num_gpus": 0} if j.device == "cpu" else {"num_cpus": 1, "num_gpus": 1}
            for j in jobs]


def node_cpus(ray) -> int:
    """The CPUs of the smallest alive node: a CPU job reserving that many fits on every node."""
    counts = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    counts = [c for c in counts if c > 0]
    if not counts:
        raise HarnessError("the Ray cluster has no node with CPUs")
    return int(min(counts))


def write_job_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """The job folder as the node had it, each file atomic and results.json last (present = complete)."""
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun replaces what a failed attempt left
    for name in sorted(files, key=lambda n: n == results.RESULTS_FILE):
        atomic.write_bytes(run_dir / name, files[name])


class RayExecutor:
    """Ray core tasks on the cluster at `address`; only the driver writes the sweep folder."""

    name = "ray"

    def __init__(self, mnist_dir: Path, command: str, address: str | None, max_retries: int):
        self.mnist_dir, self.command, self.address, self.max_retries = mnist_dir, command, address, max_retries

    def run(self, jobs: list[SweepJob], spec: SweepSpec, sweep_dir: Path, on_start: OnStart,
            on_done: OnDone) -> None:
        import ray
        try:
            ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise HarnessError(f"cannot connect to the Ray cluster at {self.address or 'auto'}: "
                               f"{_one_line(exc)}") from None
        try:
            self._run(ray, jobs, spec, sweep_dir, on_start, on_done)
        finally:
            ray.shutdown()

    def _run(self, ray, jobs, spec, sweep_dir, on_start, on_done) -> None:
        task = ray.remote(run_ray_job)
        mnist = ray.put(mnist_files(self.mnist_dir))  # once; every node fetches it from the object store
        env = {k: os.environ.get(k) for k in PROPAGATED_ENV}
        pending = {}
        for job, options in zip(jobs, job_resources(ray, jobs)):
            job_env = {**env, **(GPU_ENV if job.device != "cpu" else {})}
            ref = task.options(**options, max_retries=self.max_retries, retry_exceptions=False).remote(
                spec.job_config(job, spec.threads).to_dict(), mnist, job_env, f"{self.command}  # job {job.id}")
            pending[ref] = job
            on_start(job)
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                on_done(job, self._collect(ray, ref, sweep_dir / job.run_dir))
        except KeyboardInterrupt:
            for ref in pending:
                # not force: the task gets a KeyboardInterrupt, so the runner stops the job's child
                # process (a SIGKILLed Ray worker would orphan it) and the node's temp folder goes
                ray.cancel(ref)
            raise

    def _collect(self, ray, ref, run_dir: Path) -> JobOutcome:
        """The outcome of one finished task; its files written into the sweep folder."""
        try:
            payload = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return JobOutcome(status="interrupted", error="cancelled")
        except ray.exceptions.RayTaskError as exc:  # the job's own failure: recorded, the sweep goes on
            cause = getattr(exc, "cause", None) or exc
            return JobOutcome(status="failed", error=f"{type(cause).__name__}: {_one_line(cause)}"[:2000])
        except ray.exceptions.RayError as exc:  # worker or node lost on every attempt
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return JobOutcome(status="failed", error=f"{type(exc).__name__} after {self.max_retries} "
                                                     f"retries: {first}"[:2000])
        write_job_files(run_dir, payload["files"])
        wall = time.time() - payload["started"]  # one clock per host; across hosts it includes their skew
        return job_outcome(run_dir, wall, payload["node"])
