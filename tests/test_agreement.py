"""Per-epoch tolerances, experiments and honest verdicts, on hand-made results (no training).

A hand-made targets file calibrates epochs 1 (tolerance 0.30) and 50 (tolerance 0.60) of a cpu /
harness-noise experiment; results are built around those numbers: gaps just inside and just outside
at each epoch, another device, another config, an uncalibrated epoch.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.config import ModelConfig, RunConfig
from harness.errors import HarnessError
from harness.measurement import results
from harness.measurement.results import BackendResult, EpochRecord, RunRecord
from harness.verification import agreement, check, compare, targets, verdict
from workloads.spec import Metric

TOL = {1: 0.30, 50: 0.60}
BANDS = {1: (117.0, 123.0), 50: (92.0, 96.0)}


def config(**kw) -> RunConfig:
    return RunConfig(**{"epochs": 50, "noise": "harness", **kw})


def epoch(k: int, loss: float) -> EpochRecord:
    return EpochRecord(epoch=k, train_loss=loss + 1, metrics={"test_loss": loss, "test_loss_sampled": loss + 8},
                       train_seconds=1.0, eval_seconds=0.1, samples_per_second=1.0,
                       eval_samples_per_second=1.0, elapsed_seconds=float(k))


def result(backend: str, losses: dict[int, float], device: str = "cpu", seed: int = 1, threads: int = 2) -> BackendResult:
    return BackendResult(backend, device, seed, status="ok", threads=threads,
                         epochs=[epoch(k, v) for k, v in sorted(losses.items())])


def record(*res: BackendResult, **cfg) -> RunRecord:
    return RunRecord(config=config(**cfg), environment={}, results=list(res))


@pytest.fixture
def targets_file(tmp_path, monkeypatch) -> Path:
    per_epoch = {k: targets.EpochTargets(k, {"test_loss": targets.Band(*BANDS[k], "hand-made")}, TOL[k], "hand-made")
                 for k in TOL}
    exp = agreement.experiment(config())
    profiles = {"ci": targets.Profile("ci", 1, ("torch", "jax"), 1, exp, {"runs": ["a"] * 2}, {1: per_epoch[1]}),
                "full": targets.Profile("full", 50, ("torch", "jax"), 1, exp, {"runs": ["a"] * 5}, per_epoch)}
    path = tmp_path / "targets.toml"
    targets.write_targets(profiles, path)
    monkeypatch.setattr(targets, "TARGETS_FILE", path)
    return path


def two(gap1: float, gap50: float, **kw) -> RunRecord:
    return record(result("torch", {1: 120.0, 50: 93.0}), result("jax", {1: 120.0 + gap1, 50: 93.0 + gap50}), **kw)


class Entry:
    """What harness.reporting.report passes to the verdict."""

    def __init__(self, rec: RunRecord, r: BackendResult):
        self.record, self.result, self.label = rec, r, f"{r.backend} ({r.device})"


def entries(*recs: RunRecord) -> list[Entry]:
    return [Entry(rec, r) for rec in recs for r in rec.results]


def test_targets_round_trip_through_toml(targets_file):
    loaded = targets.load_targets()
    assert loaded["full"].per_epoch[50].max_backend_difference == 0.60
    assert loaded["full"].per_epoch[1].bands["test_loss"] == targets.Band(117.0, 123.0, "hand-made")
    found = targets.targets_at(loaded, 1, agreement.experiment(config()))
    assert found[1] == "full"  # more calibration runs than ci


@pytest.mark.parametrize("gap1, gap50, ok1, ok50", [
    (0.29, 0.59, True, True), (0.31, 0.59, False, True), (0.29, 0.61, True, False)])
def test_verdict_uses_each_epochs_own_tolerance(targets_file, gap1, gap50, ok1, ok50):
    (g,) = verdict.groups(entries(two(gap1, gap50)))
    assert (g.gaps[1].ok, g.gaps[50].ok) == (ok1, ok50)
    text = " ".join(verdict.sentences(entries(two(gap1, gap50))))
    assert ("disagree" in text) == (not (ok1 and ok50))


def test_uncalibrated_epoch_is_shown_not_judged(targets_file):
    rec = record(result("torch", {1: 120.0, 7: 100.0}), result("jax", {1: 120.1, 7: 105.0}))
    (g,) = verdict.groups(entries(rec))
    assert g.gaps[7].ok is None and g.gaps[1].ok is True
    text = " ".join(verdict.sentences(entries(rec)))
    assert "not calibrated" in text and "epoch 7" in text and "disagree" not in text
    table = "\n".join(verdict.gap_table(entries(rec)))
    assert "| 7 | 5.000 |" in table and "not calibrated" in table


def test_other_device_or_config_is_not_calibrated_and_not_mixed(targets_file):
    cuda = record(result("torch", {1: 120.0}, device="cuda"), result("jax", {1: 125.0}, device="cuda"))
    text = " ".join(verdict.sentences(entries(cuda)))
    assert "not calibrated" in text and "device kind differs (cpu vs cuda)" in text and "disagree" not in text
    # one cpu and one cuda result of the same seed are two experiments: no gap between them at all
    mixed = entries(record(result("torch", {1: 120.0})), record(result("jax", {1: 125.0}, device="cuda")))
    assert verdict.groups(mixed) == []
    big_batch = entries(record(result("torch", {1: 120.0}), result("jax", {1: 125.0}), model=ModelConfig(batch_size=256)))
    assert "model config differs (batch_size 128 vs 256)" in " ".join(verdict.sentences(big_batch))
    own_noise = entries(record(result("torch", {1: 120.0}), result("jax", {1: 121.0}), noise="framework"))
    assert "noise differs" in " ".join(verdict.sentences(own_noise))


def test_verdict_names_the_workloads_primary_metric_and_its_unit(targets_file, monkeypatch):
    rec = two(0.31, 0.7)
    assert {g.metric for g in verdict.groups(entries(rec))} == {"test_loss"}
    renamed = dataclasses.replace(rec.config.model.spec(), metrics=(Metric("neg_elbo", "renamed", "bits per image"),))
    monkeypatch.setattr(verdict, "_primary_metric", lambda config: renamed.metrics[0])
    text = " ".join(verdict.sentences(entries(rec))) + "\n".join(verdict.gap_table(entries(rec)))
    assert "bits per image in neg_elbo" in text and "largest gap (bits per image)" in text and "nats" not in text
    assert "Same-seed neg_elbo gap" in text and "test_loss" not in text


@pytest.mark.parametrize("gap, ok", [(0.59, True), (0.61, False)])
def test_check_judges_the_profile_epoch(targets_file, gap, ok):
    findings = check.evaluate(two(0.0, gap), targets.get_profile("full"))
    gap_finding = next(f for f in findings if f.metric.startswith("test_loss gap"))
    assert gap_finding.ok is ok and gap_finding.metric.endswith("epoch 50")
    assert all(f.ok for f in findings if f.metric == "test_loss")
    # the ci profile judges epoch 1 of the same 50-epoch run
    ci = check.evaluate(two(0.31, gap), targets.get_profile("ci"))
    assert not next(f for f in ci if f.metric.startswith("test_loss gap")).ok


def test_check_refuses_a_run_shorter_than_the_profile(targets_file):
    with pytest.raises(HarnessError, match="judges epoch 50, but the run has only 3"):
        check.evaluate(two(0.0, 0.0, epochs=3), targets.get_profile("full"))


def test_check_of_another_experiment_is_not_calibrated(targets_file):
    rec = record(result("torch", {1: 120.0, 50: 93.0}, device="cuda"), result("jax", {1: 130.0, 50: 99.0}, device="cuda"))
    findings = check.evaluate(rec, targets.get_profile("full"))
    assert all(f.ok and f.note.startswith("not calibrated") for f in findings)


def save(tmp_path: Path, name: str, rec: RunRecord) -> Path:
    results.save(rec, tmp_path / name)
    return tmp_path / name


def test_compare_is_exact_on_cpu_and_refuses_other_experiments(tmp_path):
    base = save(tmp_path, "base", record(result("torch", {1: 120.0, 2: 110.0})))
    tiny = save(tmp_path, "tiny", record(result("torch", {1: 120.0, 2: 110.0 + 1e-6})))
    (row,) = compare.compare(base, tiny)
    assert row.tolerance == 0.0 and row.loss_flag == 1  # 1e-6 nats is a change
    (same,) = compare.compare(base, base)
    assert same.loss_flag == 0
    threads = save(tmp_path, "threads", record(result("torch", {1: 120.0, 2: 111.0}, threads=1)))
    assert compare.compare(base, threads)[0].loss_flag is None  # not calibrated across thread counts
    with pytest.raises(HarnessError, match="seeds differ"):
        compare.compare(base, save(tmp_path, "seed2", record(result("torch", {1: 120.0}), seed=2)))
    with pytest.raises(HarnessError, match="model config differs"):
        compare.compare(base, save(tmp_path, "z2", record(result("torch", {1: 120.0}), model=ModelConfig(latent_dim=2))))
    with pytest.raises(HarnessError, match="noise differs"):
        compare.compare(base, save(tmp_path, "own", record(result("torch", {1: 120.0}), noise="framework")))


def test_calibration_derives_every_epoch_from_the_runs(tmp_path):
    runs = []
    for seed, gap in ((2, 0.05), (3, 0.2), (4, 0.1)):
        rec = record(result("torch", {1: 120.0 + seed, 2: 110.0}, seed=seed),
                     result("jax", {1: 120.0 + seed + gap, 2: 110.0 + gap / 2}, seed=seed), seed=seed, epochs=2)
        runs.append((f"seed-{seed}", rec))
    profile = targets.Profile("p", 2, ("torch", "jax"), 1)
    new = targets.calibrated_profile(profile, runs)
    assert sorted(new.per_epoch) == [1, 2] and new.calibration["seeds"] == [2, 3, 4]
    assert new.per_epoch[1].max_backend_difference == 0.4  # 2 x 0.2 (seed 3)
    assert new.per_epoch[2].max_backend_difference == targets.MIN_AGREEMENT  # 2 x 0.1 under the floor
    assert "seed 3" in new.per_epoch[1].agreement_derivation
    band = new.per_epoch[1].bands["test_loss"]
    assert (band.low, band.high) == (120.95, 125.15)  # observed 122.0-124.1, margin max(1.0, 1.05)
    mixed = runs[:2] + [("cuda", record(result("torch", {1: 1.0, 2: 1.0}, device="cuda"),
                                        result("jax", {1: 1.0, 2: 1.0}, device="cuda"), device="cuda", epochs=2))]
    with pytest.raises(HarnessError, match="not one experiment"):
        targets.calibrated_profile(profile, mixed)


def test_every_backend_receives_the_same_noise_arrays(tmp_path):
    """The arrays themselves, per pass: identical across frameworks, new each epoch, eval noise fixed."""
    import os
    import subprocess
    import sys

    import numpy as np
    spies = ["spy-torch", "spy-torch-reference", "spy-jax"]
    env = {**os.environ, "VAE_BENCH_SPY_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backends", ",".join(spies), "--epochs", "2",
                           "--train-limit", "300", "--test-limit", "100", "--no-probe", "--no-report",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = ["01-train", "02-eval", "03-train", "04-eval"]
    arrays = {s: [np.load(tmp_path / f"{s}-{c}.npy") for c in calls] for s in spies}
    for s in spies[1:]:
        for a, b in zip(arrays[spies[0]], arrays[s]):
            np.testing.assert_array_equal(a, b)
    first = arrays[spies[0]]
    assert first[0].shape == (300, 20) and first[1].shape == (100, 20) and first[0].dtype == np.float32
    assert not np.array_equal(first[0], first[2])  # each epoch its own noise
    np.testing.assert_array_equal(first[1], first[3])  # the eval noise is the same every epoch


def test_calibration_joins_the_runs_of_one_seed_split_by_backend(tmp_path):
    whole, split = [], []
    for seed in (2, 3):
        torch_r = result("torch", {1: 120.0 + seed}, seed=seed)
        jax_r = result("jax", {1: 120.1 + seed}, seed=seed)
        whole.append((f"seed-{seed}", record(torch_r, jax_r, seed=seed)))
    split = [whole[0], ("seed-3a", record(result("torch", {1: 123.0}, seed=3), seed=3)),
             ("seed-3b", record(result("jax", {1: 123.1}, seed=3), seed=3))]
    profile = targets.Profile("p", 1, ("torch", "jax"), 1)
    joined, together = targets.calibrated_profile(profile, split), targets.calibrated_profile(profile, whole)
    assert joined.per_epoch == together.per_epoch and joined.calibration["seeds"] == [2, 3]
    assert joined.calibration["runs"] == ["seed-2", "seed-3a", "seed-3b"]
    with pytest.raises(HarnessError, match="repeats torch for seed 3"):
        targets.calibrated_profile(profile, split + [("again", record(result("torch", {1: 1.0}, seed=3), seed=3))])
    with pytest.raises(HarnessError, match="seed 3 lack 1 ok epoch"):
        targets.calibrated_profile(profile, split[:2])
