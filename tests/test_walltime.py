"""A job's wall time broken into its parts (harness/measurement/walltime.py), recorded per backend in
results.json as `wall_seconds` (issue 27); older records stay readable."""
from __future__ import annotations

import json
import math

import pytest

from harness.measurement import results, walltime
from tests.conftest import ROOT, SMALL, harness


def test_breakdown_takes_the_remainder_as_other_and_never_goes_negative():
    child = {"started_at": 100.5, "sent_at": 109.0,
             "parts": {**dict.fromkeys(walltime.CHILD_PARTS, 0.0), "train": 4.0, "compile": 2.0}}
    wall = walltime.breakdown(100.0, 110.0, child)
    assert list(wall) == [*walltime.PARTS, "total"]
    assert wall["child_start"] == 0.5 and wall["shutdown"] == 1.0 and wall["total"] == 10.0
    assert wall["other"] == pytest.approx(10.0 - 0.5 - 6.0 - 1.0)
    # a child whose parts (another clock) exceed the runner's total: other is 0, not negative
    assert walltime.breakdown(100.0, 103.0, child)["other"] == 0.0
    assert walltime.breakdown(100.0, 101.5, None) == {"total": 1.5}  # the child never reported


def test_a_tiny_run_records_every_part(tmp_path):
    out = tmp_path / "run"
    proc = harness("run", "--backends", "torch,jax", "--epochs", "2", "--out", out, *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = results.load(out)
    for r in record.results:
        wall = r.wall_seconds
        assert list(wall) == [*walltime.PARTS, "total"], r.backend
        assert all(math.isfinite(v) and v >= 0 for v in wall.values()), wall
        assert sum(wall[k] for k in walltime.PARTS) <= wall["total"] + 1e-5  # time.time() vs perf_counter
        # the parts are the record's own timed windows, not estimates
        assert wall["train"] == pytest.approx(sum(e.train_seconds for e in r.epochs))
        assert wall["evaluate"] == pytest.approx(sum(e.eval_seconds for e in r.epochs))
        assert wall["compile"] == pytest.approx(r.compile_seconds)
        assert wall["framework_init"] == pytest.approx(r.setup_seconds)
        assert wall["repeats"] == 0.0
        assert wall["child_start"] > 0 and wall["interpreter_and_imports"] > 0 and wall["data_load"] > 0
        assert wall["write"] > 0 and wall["shutdown"] > 0
    stored = json.loads((out / "results.json").read_text())["results"][0]["wall_seconds"]
    assert stored == record.results[0].wall_seconds
    run = record.wall_seconds  # the harness process itself
    assert list(run) == ["harness_start", "environment_and_probe", "jobs", "total"]
    assert run["jobs"] == pytest.approx(sum(r.wall_seconds["total"] for r in record.results))
    assert run["harness_start"] > 0 and run["environment_and_probe"] > 0
    assert run["harness_start"] + run["environment_and_probe"] + run["jobs"] <= run["total"] + 0.02  # /proc: 10 ms


def test_process_start_time_is_this_process_s():
    import time
    started = walltime.process_started_at()
    assert started is not None and 0 < time.time() - started < 7 * 24 * 3600
    assert walltime.run_breakdown(None, 10.0, 12.0, [1.5]) == {"environment_and_probe": 0.5, "jobs": 1.5,
                                                                 "total": 2.0}


def test_records_from_before_the_breakdown_load_without_it():
    old = ROOT / "reports" / "cpu-intel-50-epochs" / "run"
    assert not any("wall_seconds" in r for r in json.loads((old / "results.json").read_text())["results"])
    record = results.load(old)
    assert record.results and all(r.wall_seconds == {} for r in record.results) and record.wall_seconds == {}
