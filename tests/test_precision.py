"""The labelled bf16 mode: every backend runs it, it is recorded, never judged as float32, never by parity."""
from __future__ import annotations

import math

import pytest

from harness.measurement import results
from harness.verification import agreement
from harness.verification.targets import get_profile
from tests.conftest import SMALL, assert_one_line_error, harness

ALL = "torch-reference,torch,torch-compile,jax"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run in float32 and in bf16, all four backends."""
    out = {}
    for precision in ("float32", "bf16"):
        folder = tmp_path_factory.mktemp(precision)
        proc = harness("run", "--backends", ALL, "--epochs", "1", "--threads", "1", "--precision", precision,
                       *SMALL, "--out", folder)
        assert proc.returncode == 0, proc.stderr
        out[precision] = results.load(folder)
    return out


def test_bf16_is_recorded_and_trains_every_backend(runs):
    record = runs["bf16"]
    assert record.config.precision == "bf16"
    for r in record.results:
        assert r.status == "ok" and r.backend_info["precision"] == "bf16", r.backend
        assert all(math.isfinite(v) for v in r.epochs[0].metrics.values())


def test_bf16_changes_the_numbers_a_little(runs):
    """bf16 products round differently from float32 (so the mode is real), but train the same model."""
    for f32, bf16 in zip(runs["float32"].results, runs["bf16"].results):
        a, b = f32.epochs[0].metrics["test_loss"], bf16.epochs[0].metrics["test_loss"]
        assert a != b, f32.backend
        assert abs(a - b) < 0.01 * a, (f32.backend, a, b)


def test_bf16_is_never_judged_by_float32_targets(runs):
    exp = agreement.experiment(runs["bf16"].config)
    assert get_profile("ci").at(1, exp) is None
    assert "precision differs" in agreement.mismatch(exp, agreement.experiment(runs["float32"].config))


def test_parity_refuses_bf16_in_one_line():
    assert_one_line_error(harness("parity", "--precision", "bf16", "--backends", "torch", "--steps", "1"),
                          "parity judges float32", "bf16")


def test_tf32_and_bf16_exclude_each_other():
    assert_one_line_error(harness("run", "--allow-tf32", "--precision", "bf16", *SMALL), "exclude each other")
