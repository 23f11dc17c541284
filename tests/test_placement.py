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
    from harness.execution.worker import pin_threads
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
