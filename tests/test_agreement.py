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
from harness.reporting import verdict_text
from harness.verification import agreement, calibration, check, compare, targets, verdict
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
    exp = agreement.experiment(config())
    # one profile per run, the same in reports and check --from: the shortest that covers the run
    assert targets.profile_for(loaded, exp, 1).name == "ci"
    assert targets.profile_for(loaded, exp, 50).name == "full"
    assert targets.profile_for(loaded, exp, 80).name == "full"
    assert targets.profile_for(loaded, {**exp, "device_kind": "cuda"}, 50).name == "full"  # bands: any device
    assert targets.profile_for(loaded, {**exp, "precision": "bf16"}, 50) is None
    cuda_full = dataclasses.replace(loaded["full"], name="cuda-full", calibrated_on={**exp, "device_kind": "cuda"})
    assert targets.profile_for({**loaded, "cuda-full": cuda_full}, {**exp, "device_kind": "cuda"}, 50).name == "cuda-full"


@pytest.mark.parametrize("gap1, gap50, ok1, ok50", [
    (0.29, 0.59, True, True), (0.31, 0.59, False, True), (0.29, 0.61, True, False)])
def test_verdict_uses_each_epochs_own_tolerance(targets_file, gap1, gap50, ok1, ok50):
    (g,) = verdict.groups(entries(two(gap1, gap50)))
    assert (g.gaps[1].ok, g.gaps[50].ok) == (ok1, ok50)
    text = " ".join(verdict_text.sentences(entries(two(gap1, gap50))))
    assert ("disagree" in text) == (not (ok1 and ok50))


def test_uncalibrated_epoch_is_shown_not_judged(targets_file):
    rec = record(result("torch", {1: 120.0, 7: 100.0}), result("jax", {1: 120.1, 7: 105.0}))
    (g,) = verdict.groups(entries(rec))
    assert g.gaps[7].ok is None and g.gaps[1].ok is True
    text = " ".join(verdict_text.sentences(entries(rec)))
    assert "not calibrated" in text and "epoch 7" in text and "disagree" not in text
    table = "\n".join(verdict_text.gap_table(entries(rec)))
    assert "| 7 | 5.000 |" in table and "not calibrated" in table


def test_other_device_or_config_is_not_calibrated_and_not_mixed(targets_file):
    cuda = record(result("torch", {1: 120.0}, device="cuda"), result("jax", {1: 125.0}, device="cuda"))
    text = " ".join(verdict_text.sentences(entries(cuda)))
    assert "not calibrated" in text and "device kind differs (cpu vs cuda)" in text and "disagree" not in text
    # one cpu and one cuda result of the same seed are two experiments: no gap between them at all
    mixed = entries(record(result("torch", {1: 120.0})), record(result("jax", {1: 125.0}, device="cuda")))
    assert verdict.groups(mixed) == []
    big_batch = entries(record(result("torch", {1: 120.0}), result("jax", {1: 125.0}), model=ModelConfig(batch_size=256)))
    assert "model config differs (batch_size 128 vs 256)" in " ".join(verdict_text.sentences(big_batch))
    own_noise = entries(record(result("torch", {1: 120.0}), result("jax", {1: 121.0}), noise="framework"))
    assert "noise differs" in " ".join(verdict_text.sentences(own_noise))


def test_verdict_names_the_workloads_primary_metric_and_its_unit(targets_file, monkeypatch):
    rec = two(0.31, 0.7)
    assert {g.metric for g in verdict.groups(entries(rec))} == {"test_loss"}
    renamed = dataclasses.replace(rec.config.model.spec(), metrics=(Metric("neg_elbo", "renamed", "bits per image"),))
    monkeypatch.setattr(verdict, "_primary_metric", lambda config: renamed.metrics[0])
    text = " ".join(verdict_text.sentences(entries(rec))) + "\n".join(verdict_text.gap_table(entries(rec)))
    assert "bits per image in neg_elbo" in text and "largest gap (bits per image)" in text and "nats" not in text
    assert "Same-seed neg_elbo gap" in text and "test_loss" not in text


@pytest.mark.parametrize("gap, ok", [(0.59, True), (0.61, False)])
def test_check_judges_every_calibrated_epoch(targets_file, gap, ok):
    judged = check.evaluate(two(0.0, gap), targets.get_profile("full"))
    gaps = {f.epoch: f for f in judged.findings if f.metric == "test_loss gap"}
    assert sorted(gaps) == [1, 50] and gaps[1].ok and gaps[50].ok is ok
    assert {f.epoch for f in judged.findings if f.metric == "test_loss"} == {1, 50}
    assert all(f.ok for f in judged.findings if f.metric == "test_loss")
    # the ci profile judges epoch 1 of the same 50-epoch run
    ci = check.evaluate(two(0.31, gap), targets.get_profile("ci"))
    assert [f.epoch for f in ci.failed] == [1] and ci.epochs == 1


def test_check_judges_the_epochs_a_shorter_run_has(targets_file):
    judged = check.evaluate(two(0.0, 0.0, epochs=3), targets.get_profile("full"))
    assert judged.epochs == 3 and judged.judged and not judged.failed
    assert {f.epoch for f in judged.findings} == {1}  # the hand-made profile calibrates epochs 1 and 50 only


def test_a_backend_that_stopped_early_fails(targets_file):
    rec = two(0.0, 0.0)
    rec.results[1].epochs, rec.results[1].status, rec.results[1].error = rec.results[1].epochs[:1], "failed", "boom"
    judged = check.evaluate(rec, targets.get_profile("full"))
    assert any(f.metric == "status" and "boom" in f.note for f in judged.failed)


def test_bands_judge_any_device_but_gaps_only_their_own(targets_file):
    cuda = record(result("torch", {1: 120.0, 50: 93.0}, device="cuda"), result("jax", {1: 122.0, 50: 95.0}, device="cuda"))
    judged = check.evaluate(cuda, targets.get_profile("full"))
    assert judged.judged and not judged.failed  # bands only: a 2-nat gap is not judged on cuda
    assert all(f.metric != "test_loss gap" for f in judged.findings)
    assert any("device kind differs (cpu vs cuda)" in n for n in judged.not_judged)
    far = record(result("torch", {1: 130.0, 50: 93.0}, device="cuda"))
    assert check.evaluate(far, targets.get_profile("full")).failed  # out of band on any device


def test_another_experiment_is_not_judged_at_all(targets_file):
    rec = two(0.0, 5.0, model=ModelConfig(batch_size=512))
    judged = check.evaluate(rec, targets.get_profile("full"))
    assert judged.judged == 0 and not judged.failed
    assert any("batch_size 128 vs 512" in n for n in judged.not_judged)


def test_agreement_is_judged_among_the_profiles_backends_only(targets_file):
    rec = record(result("torch", {1: 120.0, 50: 93.0}), result("jax", {1: 120.1, 50: 93.1}),
                 result("torch-compile", {1: 121.5, 50: 93.0}))
    judged = check.evaluate(rec, targets.get_profile("full"))
    assert {f.backend for f in judged.findings if "gap" in f.metric} == {"torch vs jax"}
    assert any("torch-compile: not calibrated" in n for n in judged.not_judged) and not judged.failed


def test_a_calibration_seed_is_judged_with_a_warning(targets_file, tmp_path):
    profile = dataclasses.replace(targets.get_profile("full"), calibration={"seeds": [1], "runs": []})
    judged = check.evaluate(two(0.0, 0.0), profile)
    assert judged.judged and any("not independent evidence" in w for w in judged.warnings)


def save(tmp_path: Path, name: str, rec: RunRecord) -> Path:
    results.save(rec, tmp_path / name)
    return tmp_path / name


def test_compare_is_exact_on_one_cpu_thread_and_refuses_other_experiments(tmp_path):
    base = save(tmp_path, "base", record(result("torch", {1: 120.0, 2: 110.0}, threads=1)))
    tiny = save(tmp_path, "tiny", record(result("torch", {1: 120.0, 2: 110.0 + 1e-6}, threads=1)))
    (row,) = compare.compare(base, tiny)
    assert row.tolerance == 0.0 and row.loss_flag == 1 and "exact" in row.tolerance_source  # 1e-6 nats is a change
    (same,) = compare.compare(base, base)
    assert same.loss_flag == 0
    threads = save(tmp_path, "threads", record(result("torch", {1: 120.0, 2: 111.0}, threads=2)))
    assert compare.compare(base, threads)[0].loss_flag is None  # not calibrated across thread counts
    with pytest.raises(HarnessError, match="seeds differ"):
        compare.compare(base, save(tmp_path, "seed2", record(result("torch", {1: 120.0}), seed=2)))
    with pytest.raises(HarnessError, match="model config differs"):
        compare.compare(base, save(tmp_path, "z2", record(result("torch", {1: 120.0}), model=ModelConfig(latent_dim=2))))
    with pytest.raises(HarnessError, match="noise differs"):
        compare.compare(base, save(tmp_path, "own", record(result("torch", {1: 120.0}), noise="framework")))


def calibration_runs(gaps: dict[int, float], backends=("torch", "jax"), epochs: int = 2) -> list:
    runs = []
    for seed, gap in gaps.items():
        res = [result(b, {k: 120.0 - k + seed / 10 + i * gap * (1 + k % 3) * (-1) ** k for k in range(1, epochs + 1)}, seed=seed)
               for i, b in enumerate(backends)]
        runs.append((f"seed-{seed}", record(*res, seed=seed, epochs=epochs)))
    return runs


@pytest.mark.parametrize("change, flag", [(1e-4, 0), (0.29, 0), (0.31, 1)])
def test_compare_on_two_cpu_threads_uses_the_calibrated_same_seed_gap(targets_file, tmp_path, change, flag):
    """Identical torch eager runs on two threads may differ in the last digits: the epoch's gap tolerance."""
    base = save(tmp_path, "base", record(result("torch", {1: 120.0}), epochs=1))
    new = save(tmp_path, "new", record(result("torch", {1: 120.0 + change}), epochs=1))
    (row,) = compare.compare(base, new)
    assert row.tolerance == TOL[1] and "profile 'ci'" in row.tolerance_source and row.loss_flag == flag


def test_calibration_derives_every_epoch_from_the_runs():
    runs = calibration_runs({2: 0.05, 3: -0.2, 4: 0.1})
    profile = targets.Profile("p", 2, ("torch", "jax"), 1)
    new = calibration.calibrated_profile(profile, runs)
    assert sorted(new.per_epoch) == [1, 2] and new.calibration["seeds"] == [2, 3, 4]
    assert new.calibration["false_alarm"] == 0.01 and new.window == 0  # shorter than one window
    for t in new.per_epoch.values():
        assert "rms" in t.agreement_derivation and "false alarm" in t.agreement_derivation
        for m, b in t.bands.items():  # every calibration value lies inside its band
            assert all(b.contains(e.value(m)) for _, rec in runs for r in rec.results for e in r.epochs
                       if e.epoch == t.epoch), m
    # twice the same-seed spread: twice the tolerance; more seeds with the same spread: a tighter one
    double = calibration.calibrated_profile(profile, calibration_runs({2: 0.1, 3: -0.4, 4: 0.2}))
    assert double.per_epoch[1].max_backend_difference == pytest.approx(2 * new.per_epoch[1].max_backend_difference, abs=2e-3)
    more = calibration.calibrated_profile(profile, calibration_runs({s: g for s, g in zip(range(2, 14), [0.05, -0.2, 0.1] * 4)}))
    assert more.per_epoch[1].max_backend_difference < new.per_epoch[1].max_backend_difference
    mixed = runs[:2] + [("cuda", record(result("torch", {1: 1.0, 2: 1.0}, device="cuda"),
                                        result("jax", {1: 1.0, 2: 1.0}, device="cuda"), device="cuda", epochs=2))]
    with pytest.raises(HarnessError, match="not one experiment"):
        calibration.calibrated_profile(profile, mixed)
    with pytest.raises(HarnessError, match="at least 3 seeds"):
        calibration.calibrated_profile(profile, runs[:2])


def test_long_profiles_get_a_window_tolerance_from_the_window_means():
    runs = calibration_runs({s: (-1) ** s * 0.1 for s in range(2, 8)}, epochs=12)
    new = calibration.calibrated_profile(targets.Profile("p", 12, ("torch", "jax"), 1), runs)
    assert new.window == calibration.WINDOW
    assert all(new.per_epoch[e].window_tolerance is None for e in range(1, 10))
    assert all(new.per_epoch[e].window_tolerance < new.per_epoch[e].max_backend_difference for e in (10, 11, 12))


@pytest.mark.parametrize("n, coverage, table", [(10, 0.95, 3.379), (10, 0.99, 4.433), (20, 0.99, 3.615)])
def test_tolerance_factor_matches_the_published_table(n, coverage, table):
    """Two-sided normal tolerance factors, 95 % confidence (NIST/SEMATECH e-Handbook 7.2.6.3 tables)."""
    assert calibration.howe_k(n, coverage) == pytest.approx(table, abs=0.02)


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
    whole = []
    for seed in (2, 3, 4):
        torch_r = result("torch", {1: 120.0 + seed}, seed=seed)
        jax_r = result("jax", {1: 120.1 + seed - seed % 2 * 0.2}, seed=seed)
        whole.append((f"seed-{seed}", record(torch_r, jax_r, seed=seed)))
    split = [whole[0], whole[2], ("seed-3a", record(result("torch", {1: 123.0}, seed=3), seed=3)),
             ("seed-3b", record(result("jax", {1: 122.9}, seed=3), seed=3))]
    profile = targets.Profile("p", 1, ("torch", "jax"), 1)
    joined, together = calibration.calibrated_profile(profile, split), calibration.calibrated_profile(profile, whole)
    assert joined.per_epoch == together.per_epoch and joined.calibration["seeds"] == [2, 3, 4]
    assert joined.calibration["runs"] == ["seed-2", "seed-4", "seed-3a", "seed-3b"]
    with pytest.raises(HarnessError, match="repeats torch for seed 3"):
        calibration.calibrated_profile(profile, split + [("again", record(result("torch", {1: 1.0}, seed=3), seed=3))])
    with pytest.raises(HarnessError, match="seed 3 lack 1 ok epoch"):
        calibration.calibrated_profile(profile, split[:3])
