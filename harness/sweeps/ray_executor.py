"""The Ray executor: each job a Ray core task on a cluster (see harness/sweeps/executors.py).

`import ray` happens only inside the functions here, so only a sweep that uses this executor imports it.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from harness import atomic, data
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.execution import runner
from harness.measurement import results
from harness.sweeps import placement
from harness.sweeps.executor_common import GPU_ENV, OnDone, OnStart, job_outcome
from harness.sweeps.state import JobOutcome, SweepJob, SweepSpec

# Environment variables that change a timing; the driver's values are applied on every Ray node, so a
# job sees the same settings whichever executor runs it (Ray itself sets OMP_NUM_THREADS on its workers).
PROPAGATED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
# A checkpoint serves `harness run --resume` of a job in place; a Ray job is rerun whole, so it stays behind.
NOT_RETURNED = ("checkpoint.npz",)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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
    task (every CPU of a node for a CPU job), so the job uses exactly what it reserved. A GPU job is
    pinned to its GPU's share of the node's cores, as the local executor pins it (placement), so GPU jobs
    running at once on one node do not compete for cores; the worker's own affinity comes back afterwards
    (Ray reuses workers for later tasks).
    """
    import ray

    started = time.time()
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    config = RunConfig.from_dict(config_dict)
    worker_cores = os.sched_getaffinity(0)
    try:
        if config.device != "cpu":
            cores = gpu_job_cores(ray, sorted(worker_cores))
            if cores:
                os.sched_setaffinity(0, cores)  # the job's processes inherit it; the runner records it
                config = RunConfig.from_dict({**config_dict, "threads": placement.job_threads(
                    config.threads, placement.Slot("", cores))})
        if not config.threads:
            assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
            threads = int(assigned) if config.device == "cpu" else 0
            config = RunConfig.from_dict({**config.to_dict(), "threads": threads or len(os.sched_getaffinity(0))})
        return _run_in_temp(ray, config, mnist, command, started)
    finally:
        os.sched_setaffinity(0, worker_cores)


def gpu_job_cores(ray, node_cores: list[int]) -> tuple[int, ...] | None:
    """This task's share of its node's cores (placement.ray_gpu_cores), or None when it cannot be known."""
    context = ray.get_runtime_context()
    node = next((n for n in ray.nodes() if n.get("NodeID") == context.get_node_id()), {})
    return placement.ray_gpu_cores(node_cores, context.get_accelerator_ids().get("GPU", []),
                                   int(node.get("Resources", {}).get("GPU", 0)))


def _run_in_temp(ray, config: RunConfig, mnist: dict[str, bytes], command: str, started: float) -> dict:
    """The job in a temporary folder of this node; returns its files, the node's name and the start time."""
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
                spec.job_config(job, spec.base.threads).to_dict(), mnist, job_env, f"{self.command}  # job {job.id}")
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
