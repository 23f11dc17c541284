"""docs/extending.md's promise, tested: an engine of a new framework is its own module plus one
`register` line; `harness run` trains it beside the shipped engines with nothing under harness/
changed (tests/plugin_numpy.py, loaded through VAE_BENCH_PLUGINS as an out-of-tree engine would be).
"""
from __future__ import annotations

import json
import math
import os

import pytest

from tests.conftest import SMALL, assert_one_line_error, harness

PLUGINS = {**os.environ, "VAE_BENCH_PLUGINS": "tests.plugin_backends,tests.plugin_numpy"}


def test_a_plugin_engine_trains_beside_torch(tmp_path, mnist):
    """Same init, data order and noise: the NumPy oracle engine ends one epoch where torch eager does
    (float64 against float32 arithmetic, so close, not equal), and its option and version are recorded."""
    pytest.importorskip("torch")
    out = tmp_path / "run"
    proc = harness("run", "--backends", "numpy-oracle,torch", "--epochs", "1", "--threads", "1", "--out", out,
                   "--data-dir", mnist.directory, "--engine-option", "numpy-oracle.dtype=float32", *SMALL, env=PLUGINS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {r["backend"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    plugin, torch = results["numpy-oracle"], results["torch"]
    assert plugin["status"] == torch["status"] == "ok"
    assert plugin["backend_info"]["dtype"] == "float32" and plugin["backend_info"]["numpy"]
    assert plugin["compile_cache"] == "none"
    ours, theirs = plugin["epochs"][0], torch["epochs"][0]
    assert math.isfinite(ours["train_loss"]) and ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
    for name, value in ours["metrics"].items():
        assert value == pytest.approx(theirs["metrics"][name], rel=1e-4), name
    assert (out / "numpy-oracle" / "params.npz").exists()


def test_a_plugin_engines_options_are_its_own(tmp_path):
    """The option the plugin declares is checked like a shipped engine's: a value it does not allow is one line."""
    proc = harness("run", "--backends", "numpy-oracle", "--epochs", "1", "--out", tmp_path / "r",
                   "--engine-option", "numpy-oracle.dtype=float16", *SMALL, env=PLUGINS)
    assert_one_line_error(proc, "numpy-oracle dtype 'float16'", "float64, float32")
