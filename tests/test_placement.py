"""Concurrent GPU jobs get disjoint, equal shares of the cores (harness/sweeps/placement.py), and a job spec's
cores are what the worker pins to."""
from __future__ import annotations

import multiprocessing
import os

import pytest

from harness.errors import HarnessError
from harness.sweeps import placement, sweep


def test_split_is_disjoint_equal_and_in_order():
    blocks = placement.split_cores(range(16), 3)
    assert blocks == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]  # core 15 stays idle
    assert placement.split_cores([7, 3, 5, 1], 2) == [[1, 3], [5, 7]]
    assert placement.split_cores([0, 1], 1) == [[0, 1]]


@pytest.mark.parametrize("cores, parts", [(range(16), 8), (range(13), 4), (range(2), 2), (range(64), 7)])
def test_split_properties(cores, parts):
    blocks = placement.split_cores(cores, parts)
    flat = [c for b in blocks for c in b]
    assert len(blocks) == parts and len(set(flat)) == len(flat) and set(flat) <= set(cores)
    assert {len(b) for b in blocks} == {len(list(cores)) // parts}


def test_split_needs_a_core_per_job():
    with pytest.raises(HarnessError, match="need at least 3 CPU cores"):
        placement.split_cores([0, 1], 3)
    with pytest.raises(ValueError):
        placement.split_cores([0, 1], 0)


def test_gpu_slots():
    slots = placement.gpu_slots(["0", "1", "2", "3"], list(range(16)))
    assert [s.gpu for s in slots] == ["0", "1", "2", "3"]
    assert [s.cores for s in slots] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15)]
    assert [s.gpu for s in placement.gpu_slots(["0", "1", "2"], [0, 1])] == ["0", "1"]  # fewer cores than GPUs
    with pytest.raises(HarnessError, match="no GPU visible"):
        placement.gpu_slots([], [0, 1])


def test_job_threads_never_exceed_the_slot():
    slot = placement.Slot("0", (4, 5, 6, 7))
    assert placement.job_threads(0, slot) == 4
    assert placement.job_threads(2, slot) == 2
    assert placement.job_threads(16, slot) == 4


def _pin_and_report(threads, cores, queue):
    from harness.channel import pin_threads
    queue.put((pin_threads(threads, cores), sorted(os.sched_getaffinity(0)), os.environ["OMP_NUM_THREADS"]))


def _pinned(threads, cores):
    ctx = multiprocessing.get_context("spawn")  # affinity and environment change only in the child
    queue = ctx.Queue()
    proc = ctx.Process(target=_pin_and_report, args=(threads, cores, queue))
    proc.start()
    result = queue.get(timeout=60)
    proc.join()
    return result


def test_worker_pins_to_the_job_specs_cores():
    core = max(os.sched_getaffinity(0))
    assert _pinned(0, [core]) == (1, [core], "1")
    assert _pinned(5, [core]) == (1, [core], "1")  # never more threads than the spec's cores
    everything = sorted(os.sched_getaffinity(0))
    assert _pinned(0, None) == (len(everything), everything, str(len(everything)))


def test_sweep_job_records_the_cores_of_its_run():
    from harness.measurement.results import BackendResult, RunRecord
    job = sweep.SweepJob("torch", "cuda", 1, 20)
    result = BackendResult("torch", "cuda", 1, status="ok", cores=[4, 5, 6, 7])
    sweep.apply_outcome(job, sweep.JobOutcome(status="ok", record=RunRecord({}, {}, [result])))
    assert job.cores == [4, 5, 6, 7]
    assert sweep.SweepJob.from_dict(vars(job)).cores == [4, 5, 6, 7]


def test_ray_gpu_jobs_get_the_local_slot_of_their_gpu():
    """A Ray GPU job on GPU i of a node gets exactly the cores a local sweep gives GPU i (issue 27)."""
    cores = list(range(16))
    local = placement.gpu_slots(["0", "1", "2", "3"], cores)
    assert [placement.ray_gpu_cores(cores, [s.gpu], 4) for s in local] == [s.cores for s in local]
    assert placement.ray_gpu_cores(range(13), ["2"], 3) == (8, 9, 10, 11)  # core 12 idle, as locally
    assert placement.ray_gpu_cores(cores, ["0"], 1) == tuple(cores)
    for unknown in ([], ["0", "1"], ["GPU-1f2e"], ["4"]):  # none, several, not an index, beyond the node
        assert placement.ray_gpu_cores(cores, unknown, 4) is None
    assert placement.ray_gpu_cores(cores, ["0"], 0) is None
    with pytest.raises(HarnessError, match="a core of its own"):
        placement.ray_gpu_cores([0, 1], ["2"], 3)


class FakeRay:
    """The parts of `ray` a task reads: its node, its GPU id and the node's resources."""

    def __init__(self, gpu_ids, node_gpus):
        self.gpu_ids, self.node_gpus = gpu_ids, node_gpus

    def get_runtime_context(self):
        fake = self

        class Context:
            def get_node_id(self):
                return "node-a"

            def get_accelerator_ids(self):
                return {"GPU": fake.gpu_ids}

            def get_assigned_resources(self):
                return {"CPU": 1.0, "GPU": 1.0}
        return Context()

    def nodes(self):
        return [{"NodeID": "node-b", "Resources": {"GPU": 8.0}},
                {"NodeID": "node-a", "Resources": {"GPU": float(self.node_gpus), "CPU": 2.0}}]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to split")
@pytest.mark.parametrize("gpu", ["0", "1"])
def test_ray_task_pins_a_gpu_job_and_gives_the_worker_its_cores_back(monkeypatch, gpu):
    """run_ray_job with a stand-in ray: the job runs pinned to its GPU's block with that many threads; the
    worker process (reused by Ray) has every core again afterwards. CPU jobs are not pinned."""
    from harness.config import RunConfig
    from harness.sweeps import ray_executor
    fake = FakeRay([gpu], 2)
    monkeypatch.setitem(__import__("sys").modules, "ray", fake)
    seen = []
    monkeypatch.setattr(ray_executor, "_run_in_temp", lambda ray, config, mnist, command, started: seen.append(
        (sorted(os.sched_getaffinity(0)), config.threads, config.device)) or {})
    worker = sorted(os.sched_getaffinity(0))
    block = placement.split_cores(worker, 2)[int(gpu)]
    ray_executor.run_ray_job(RunConfig(device="cuda").to_dict(), {}, {}, "test")
    ray_executor.run_ray_job(RunConfig(device="cpu").to_dict(), {}, {}, "test")
    assert seen == [(block, len(block), "cuda"), (worker, 1, "cpu")]  # cpu: the CPUs Ray assigned (1 here)
    assert sorted(os.sched_getaffinity(0)) == worker
