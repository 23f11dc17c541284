"""Seed ensembles through the harness (`--ensemble`): each seed gets what its own run gets.

The engines' own equality with their single-seed twins is tested beside them
(tests/test_torch_ensemble.py, tests/test_jax_ensemble.py); here the whole path: `harness parity
--ensemble`, a run's results per seed against the same seeds run one by one, a member that diverges,
and a sweep whose seeds train as one ensemble.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from harness.measurement import results
from harness.verification.targets import get_profile
from tests.conftest import ROOT, SMALL, harness

ENGINES = ("torch", "torch-compile", "jax")
SEEDS = "1-4"
ALONE = "1,4"  # the seeds also trained one per process


@pytest.fixture(scope="module")
def ensemble_and_single(tmp_path_factory, mnist):
    """Seeds 1-4 of every engine with an ensemble as ensembles, and its first and last seed (the
    members at both ends of the stacked axis) one seed per process."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    root = tmp_path_factory.mktemp("ensembles")
    common = ["--backends", ",".join(ENGINES), "--epochs", "1", "--threads", "1", "--data-dir", mnist.directory, *SMALL]
    for name, extra in (("ensemble", ["--seeds", SEEDS, "--ensemble"]), ("single", ["--seeds", ALONE])):
        proc = harness("run", *common, *extra, "--out", root / name, timeout=1200)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return results.load(root / "ensemble"), results.load(root / "single")


def test_every_member_equals_its_own_run_within_the_calibrated_gap(ensemble_and_single):
    """Epoch 1 of seeds 1 and 4 of each engine's 4-seed ensemble against the same seed trained alone: within the
    `ci` profile's calibrated epoch-1 same-seed gap (float32 reduction order is all that differs, so
    the differences are orders of magnitude inside it)."""
    ensemble, single = ensemble_and_single
    gap = get_profile("ci").per_epoch[1].max_backend_difference
    assert len(ensemble.results) == len(ENGINES) * 4
    compared = [r for r in ensemble.results if r.seed in (1, 4)]
    assert len(compared) == len(ENGINES) * 2
    for r in compared:
        alone = single.find(r.backend, r.device, r.seed)
        assert r.status == alone.status == "ok"
        mine, theirs = r.epochs[0], alone.epochs[0]
        assert abs(mine.train_loss - theirs.train_loss) <= gap, (r.backend, r.seed)
        for name, value in mine.metrics.items():
            assert abs(value - theirs.metrics[name]) <= gap, (r.backend, r.seed, name)


def test_an_ensemble_records_its_size_and_aggregate_throughput(ensemble_and_single):
    ensemble, single = ensemble_and_single
    for r in ensemble.results:
        info = r.backend_info["ensemble"]
        assert info["size"] == 4 and info["seeds"] == [1, 2, 3, 4]
        assert info["aggregate_samples_per_second"] == pytest.approx(4 * r.epochs[0].samples_per_second, rel=1e-6)
        assert info["memory_estimate_bytes"] > 0
    assert all("ensemble" not in r.backend_info for r in single.results)


def test_parity_of_every_member_against_the_oracle(tmp_path):
    """`harness parity --ensemble 4`: each member of each engine's ensemble passes lockstep parity
    against the float64 oracle of its own seed."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    proc = harness("parity", "--backends", ",".join(ENGINES), "--ensemble", "4", "--steps", "5", "--threads", "1",
                   "--out", tmp_path / "p", timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "p" / "parity.json").read_text())
    names = [b["backend"] for b in doc["backends"]]
    assert len(names) == len(ENGINES) * 4 and all("ensemble of 4" in n for n in names), names


def test_a_diverging_member_is_reported_for_its_seed_and_the_others_finish(tmp_path, mnist):
    """Member 1 (seed 2) of the ensemble gets NaN weights before epoch 2: seed 2 is `diverged` at
    epoch 2, seeds 1 and 3 train all 3 epochs and keep their params."""
    pytest.importorskip("torch")
    env = {**os.environ, "VAE_BENCH_PLUGINS": "tests.plugin_backends", "FAULT_EPOCH": "2", "FAULT_MEMBER": "1"}
    out = tmp_path / "r"
    proc = harness("run", "--backends", "fault-nan-member", "--seeds", "1-3", "--ensemble", "--epochs", "3",
                   "--threads", "1", "--out", out, "--data-dir", mnist.directory, *SMALL, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    record = results.load(out)
    by_seed = {r.seed: r for r in record.results}
    assert by_seed[2].status == "diverged" and "diverged at epoch 2" in by_seed[2].error
    assert len(by_seed[2].epochs) == 1
    for seed in (1, 3):
        assert by_seed[seed].status == "ok" and len(by_seed[seed].epochs) == 3
        assert (out / "fault-nan-member" / by_seed[seed].params_file).exists()


def test_a_sweep_trains_each_backends_seeds_as_one_ensemble(tmp_path, mnist):
    """jax's seeds 1-2 are one run (one folder, one child); torch-reference, which has no ensemble,
    runs one job per seed; the sweep's summary covers every seed."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    out = tmp_path / "s"
    proc = harness("sweep", "--backends", "jax,torch-reference", "--seeds", "1-2", "--ensemble", "--epochs", "1",
                   "--threads", "1", "--out", out, "--data-dir", mnist.directory,
                   "--train-limit", "512", "--test-limit", "256", timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = json.loads((out / "sweep.json").read_text())["jobs"]
    assert [(j["backend"], j["seed"], j["status"]) for j in jobs] == [
        ("jax", 1, "ok"), ("torch-reference", 1, "ok"), ("jax", 2, "ok"), ("torch-reference", 2, "ok")]
    jax_dirs = {j["run_dir"] for j in jobs if j["backend"] == "jax"}
    assert len(jax_dirs) == 1 and len({j["run_dir"] for j in jobs if j["backend"] == "torch-reference"}) == 2
    record = results.load(out / jax_dirs.pop())
    assert [r.seed for r in record.results] == [1, 2] and record.config.ensemble


def test_an_interrupted_ensemble_resumes_to_the_same_numbers(tmp_path, mnist):
    """Ctrl-C after the first epoch, then `--resume`: every member continues from its own checkpoint and
    ends bit-identical to the uninterrupted ensemble (slow-torch: the torch ensemble, 1 s per epoch)."""
    pytest.importorskip("torch")
    env = {**os.environ, "VAE_BENCH_PLUGINS": "tests.plugin_backends"}
    common = ["--backends", "slow-torch", "--seeds", "1-2", "--ensemble", "--epochs", "3", "--threads", "1",
              "--data-dir", str(mnist.directory), *SMALL]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert harness("run", *common, "--out", full, env=env).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *map(str, common), "--out", str(cut)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the first finished epoch of every member, on disk
        try:
            if all(r.epochs for r in results.load(cut).results):
                break
        except Exception:
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--resume" in err, err
    assert {r.status for r in results.load(cut).results} == {"interrupted"}
    resumed = harness("run", "--resume", cut, "--no-report", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for a, b in zip(results.load(full).results, results.load(cut).results, strict=True):
        assert b.status == "ok" and a.seed == b.seed
        assert [(e.train_loss, e.metrics) for e in a.epochs] == [(e.train_loss, e.metrics) for e in b.epochs]
        with np.load(full / "slow-torch" / a.params_file) as pa, np.load(cut / "slow-torch" / b.params_file) as pb:
            assert all(np.array_equal(pa[k], pb[k]) for k in pa.files)
