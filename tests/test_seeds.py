"""Runs of several seeds (`harness run --seeds`), and what an ensemble checks before it starts.

What the ensemble engines compute is tested in tests/test_ensembles.py; here, the harness side: one
result per (backend, seed), each seed's files in its own folder, the same numbers as a run of that
seed alone, calibration reading each result's seed, and the one-line errors.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.config import ModelConfig
from harness.errors import HarnessError
from harness.execution import ensemble_memory
from harness.measurement import results
from harness.verification.calibration import seeds_of
from tests.conftest import SMALL, assert_one_line_error, harness


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, mnist):
    """torch on seeds 3 and 4 in one run, and seed 4 alone."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("seeds")
    common = ["--backends", "torch", "--epochs", "1", "--threads", "1", "--data-dir", mnist.directory, *SMALL]
    for name, seeds in (("both", "3,4"), ("alone", "4")):
        proc = harness("run", "--seeds", seeds, "--out", root / name, *common)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def test_a_run_of_several_seeds_keeps_one_result_and_folder_per_seed(two_seeds):
    record = results.load(two_seeds / "both")
    assert [(r.backend, r.seed, r.status) for r in record.results] == [("torch", 3, "ok"), ("torch", 4, "ok")]
    assert record.config.run_seeds() == (3, 4)
    for r in record.results:
        assert r.params_file == f"seed-{r.seed}/params.npz"
        assert (two_seeds / "both" / "torch" / r.params_file).exists()


def test_each_seed_of_a_run_equals_that_seed_run_alone(two_seeds):
    """Same seed, same init, order and noise: the same numbers, and the same trained weights."""
    both = results.load(two_seeds / "both").find("torch", "cpu", 4)
    alone = results.load(two_seeds / "alone").results[0]
    assert both.epochs[0].train_loss == alone.epochs[0].train_loss
    assert both.epochs[0].metrics == alone.epochs[0].metrics
    with np.load(two_seeds / "both" / "torch" / both.params_file) as a, \
            np.load(two_seeds / "alone" / "torch" / alone.params_file) as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_calibration_reads_every_seed_of_a_run(two_seeds):
    joined = seeds_of([("both", results.load(two_seeds / "both"))])
    assert sorted(joined) == [3, 4] and all(set(v) == {"torch"} for v in joined.values())


def test_a_seed_given_twice_is_one_line(tmp_path):
    proc = harness("run", "--backends", "torch", "--seeds", "1,2,1", "--out", tmp_path / "r", *SMALL)
    assert_one_line_error(proc, "--seeds", "seed 1 given twice")


def test_an_ensemble_too_large_for_the_host_is_one_line_before_anything_starts(tmp_path):
    """A million MLP seeds need terabytes: refused before a record, a folder or a child exists."""
    out = tmp_path / "huge"
    proc = harness("run", "--backends", "torch", "--seeds", "1-1000000", "--ensemble", "--out", out, *SMALL)
    assert_one_line_error(proc, "an ensemble of 1000000 seeds needs about", "seed(s) fit")
    assert not (out / "results.json").exists()


def test_the_memory_estimate_grows_with_members_and_names_what_fits():
    model = ModelConfig()
    one, two = (ensemble_memory.estimate(model, k, 60_000, 10_000) for k in (1, 2))
    assert two.total > one.total and two.data == one.data  # the data set is held once
    assert two.state == 2 * one.state == 2 * 16 * sum(int(np.prod(s)) for s in model.shapes().values())
    capacity = 10 * two.total
    fit = ensemble_memory.largest_fitting(model, capacity, 60_000, 10_000)
    assert ensemble_memory.estimate(model, fit, 60_000, 10_000).total <= ensemble_memory.HEADROOM * capacity
    assert ensemble_memory.estimate(model, fit + 1, 60_000, 10_000).total > ensemble_memory.HEADROOM * capacity
    with pytest.raises(HarnessError, match=f"at most {fit} seed"):
        ensemble_memory.check_fits(model, fit + 1, 60_000, 10_000, capacity, "a test device")


def test_torch_reference_trains_one_seed_per_process_in_an_ensemble_run(tmp_path, mnist):
    """It has no ensemble engine: --ensemble leaves it the pytorch/examples loop, one job per seed."""
    pytest.importorskip("torch")
    out = tmp_path / "r"
    proc = harness("run", "--backends", "torch-reference", "--seeds", "1,2", "--ensemble", "--epochs", "1",
                   "--threads", "1", "--out", out, "--data-dir", mnist.directory, *SMALL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "results.json").read_text())
    assert [(r["seed"], r["status"]) for r in doc["results"]] == [(1, "ok"), (2, "ok")]
    assert all("ensemble" not in r["backend_info"] for r in doc["results"])
