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
  failed with its error while the others go on. `import ray` happens only in harness/sweeps/ray_executor.py,
  only when asked for.

This module holds `create`, the factory every caller uses; the executors live in harness/sweeps/local.py and
harness/sweeps/ray_executor.py, what they share in harness/sweeps/executor_common.py. Their public names are
re-exported here.
"""
from __future__ import annotations

import importlib.util

from harness import data
from harness.errors import HarnessError
from harness.sweeps.executor_common import GPU_ENV, OnDone, OnStart, job_outcome
from harness.sweeps.local import LocalExecutor, run_local_job, visible_gpus
from harness.sweeps.ray_executor import (NOT_RETURNED, PROPAGATED_ENV, RayExecutor, job_resources, mnist_files,
                                         node_cpus, run_ray_job, write_job_files)
from harness.sweeps.state import SweepSpec

__all__ = ["RAY_MISSING", "create", "GPU_ENV", "OnDone", "OnStart", "job_outcome", "LocalExecutor",
           "run_local_job", "visible_gpus", "NOT_RETURNED", "PROPAGATED_ENV", "RayExecutor", "job_resources",
           "mnist_files", "node_cpus", "run_ray_job", "write_job_files"]

RAY_MISSING = "executor 'ray' needs the ray extra: pip install -e '.[ray]'"


def create(spec: SweepSpec, data_dir: str | None, command: str):
    """The executor `spec` names, with the verified MNIST folder located (and fetched) up front."""
    if spec.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise HarnessError(RAY_MISSING)
    mnist_dir, _ = data.locate(data_dir)
    if spec.executor == "ray":
        return RayExecutor(mnist_dir, command, spec.address, spec.max_retries)
    return LocalExecutor(mnist_dir, command)
