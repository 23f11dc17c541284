"""Every committed results file and sweep file still loads as the one configuration tree, and still matches
the experiments targets.toml was calibrated on.

RunRecord.config is a parsed RunConfig (old records are migrated by RunConfig.from_dict alone); the
comparability key (agreement.experiment) read from it must equal what the raw-dict reading of the same
file gave before the change, and every calibration run a profile names must still be that profile's
experiment. A sweep.json written with a flat spec loads as a base RunConfig whose jobs are the configs its
jobs' results.json files hold.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import RunConfig
from harness.measurement import results
from harness.sweeps import state
from harness.verification import agreement, targets

ROOT = Path(__file__).resolve().parent.parent
RUN_FILES = sorted(p for p in (ROOT / "reports").rglob(results.RESULTS_FILE) if "config" in json.loads(p.read_text()))


def raw_experiment(config: dict, device: str) -> dict:
    """agreement.experiment as it read a results file's raw `config` dict before configs were parsed."""
    return {"device_kind": agreement.device_kind(device or config.get("device", "cpu")),
            "model": dict(sorted({"workload": "mlp-vae", **(config.get("model") or {})}.items())),
            "precision": config.get("precision", "float32"),
            "train_limit": int(config.get("train_limit") or 0),
            "test_limit": int(config.get("test_limit") or 0),
            "noise": config.get("noise", "framework")}


def test_there_are_old_and_new_records():
    assert len(RUN_FILES) > 50
    versions = {json.loads(p.read_text())["schema_version"] for p in RUN_FILES}
    assert versions == {1, 2}, versions  # both schemas are exercised


@pytest.mark.parametrize("path", RUN_FILES, ids=[str(p.relative_to(ROOT / "reports").parent) for p in RUN_FILES])
def test_committed_results_load_as_run_configs(path):
    raw = json.loads(path.read_text())["config"]
    record = results.load(path)
    assert isinstance(record.config, RunConfig)
    assert record.config.model.spec().metric_names[0] in record.results[0].epochs[0].metrics
    for r in record.results:
        old = raw_experiment(raw, r.device)
        if record.config.model.workload != "mlp-vae":  # the MLP's size is no longer in another workload's config
            assert old["model"].pop("hidden_dim") == 400
        assert agreement.experiment(record.config, r.device) == old
    # What a rewrite of the file (harness evaluate saves records) holds parses back to the same config.
    assert RunConfig.from_dict(json.loads(json.dumps(record.to_dict()))["config"]) == record.config


def profile_runs() -> list[tuple[str, Path]]:
    out = []
    for name, profile in targets.load_targets().items():
        out += [(name, ROOT / run) for run in profile.calibration.get("runs", []) if (ROOT / run).is_dir()]
    return out


@pytest.mark.parametrize("name, run", profile_runs(), ids=[f"{n}:{Path(r).name}" for n, r in profile_runs()])
def test_calibration_runs_still_match_their_profile(name, run):
    profile = targets.load_targets()[name]
    record = results.load(run)
    for r in record.results:
        exp = agreement.experiment(record.config, r.device)
        assert agreement.mismatch(profile.calibrated_on, exp) is None
        assert profile.at(profile.epochs, exp) is not None


@pytest.mark.parametrize("name", sorted(targets.load_targets()))
def test_a_new_run_of_a_profile_matches_its_targets(name):
    """What `harness check --profile NAME` trains today is the experiment the profile was calibrated on."""
    from harness import cli
    from harness.cli import check as cli_check
    profile = targets.load_targets()[name]
    args = cli.build_parser().parse_args(["check", "--profile", name])
    config = cli_check._profile_config(args, profile, profile.seed)
    assert agreement.mismatch(profile.calibrated_on, agreement.experiment(config)) is None
    assert profile.at(profile.epochs, agreement.experiment(config)) is not None
    model = json.loads(json.dumps(config.to_dict()))["model"]
    assert ("hidden_dim" in model) == (config.model.workload == "mlp-vae")  # each workload writes its own sizes


def test_every_profile_has_a_committed_calibration_run():
    assert {name for name, _ in profile_runs()} == set(targets.load_targets())


@pytest.mark.parametrize("sweep", ["cpu-sweep-5-seeds", "cpu-latent-sweep"])
def test_flat_sweep_specs_migrate_to_a_base_config(sweep):
    folder = ROOT / "reports" / sweep
    flat = json.loads((folder / state.SWEEP_FILE).read_text())["spec"]
    loaded = state.load(folder)
    spec = loaded.spec
    assert "base" not in flat and spec.base.epochs == flat["epochs"] and spec.base.target_loss == flat["target_loss"]
    assert (spec.backends, spec.seeds, spec.latent_dims) == (tuple(flat["backends"]), tuple(flat["seeds"]),
                                                             tuple(flat["latent_dims"]))
    checked = 0
    for job in loaded.jobs:
        if not (folder / job.run_dir / results.RESULTS_FILE).exists():
            continue
        record = results.load(folder / job.run_dir)
        planned = spec.job_config(job, record.config.threads)
        # The noise source is the one thing a flat spec did not say (the sweep of 5 seeds ran before it existed).
        assert {**planned.to_dict(), "noise": None} == {**record.config.to_dict(), "noise": None}
        checked += 1
    assert checked == len(loaded.jobs)
    # and it is written back in the new shape, which loads to the same spec
    assert state.SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
