"""Sweeps on the local executor: spec and flags, statistics against SciPy, interrupt and --resume, report.

The real sweep trains torch on 256 samples for one epoch per job (seconds each); the statistics are
checked on hand-made records against a direct SciPy computation. The Ray executor is in test_sweep_ray.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from harness import cli
from harness.cli import sweep as cli_sweep
from harness.config import ModelConfig
from harness.errors import HarnessError
from harness.measurement import stats
from harness.sweeps import sweep

REPO = Path(__file__).resolve().parent.parent
VAE_METRICS = ("test_loss", "test_loss_sampled")
TINY = ["--epochs", "1", "--train-limit", "256", "--test-limit", "256", "--threads", "1"]


# ---------------------------------------------------------------------------------- statistics

def rows(backend: str, speeds: list[float], losses: list[float], sampled: list[float], latent: int = 20):
    return [{"backend": backend, "device": "cpu", "latent_dim": latent, "seed": seed, "test_loss": loss,
             "test_loss_sampled": s, "samples_per_second": speed}
            for seed, (speed, loss, s) in enumerate(zip(speeds, losses, sampled), start=1)]


FAST = dict(speeds=[5200.0, 5350.0, 5100.0, 5420.0, 5290.0], losses=[119.8, 120.4, 119.5, 120.9, 120.1],
            sampled=[127.9, 128.6, 127.2, 128.8, 128.1])
SLOW = dict(speeds=[4010.0, 3890.0, 4120.0, 3975.0, 4060.0], losses=[119.9, 120.3, 119.7, 121.2, 120.0],
            sampled=[128.3, 128.4, 127.6, 129.1, 128.0])


def test_group_statistics_match_scipy():
    summary = stats.summarize(rows("jax", **FAST) + rows("torch", **SLOW), VAE_METRICS)
    torch = next(s for s in summary if s["backend"] == "torch")
    x = np.array(SLOW["losses"])
    low, high = sps.t.interval(0.95, df=4, loc=x.mean(), scale=sps.sem(x))
    assert torch["n"] == 5 and torch["seeds"] == [1, 2, 3, 4, 5]
    assert torch["test_loss_mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert torch["test_loss_std"] == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert (torch["test_loss_ci_low"], torch["test_loss_ci_high"]) == pytest.approx((low, high), rel=1e-12)
    v = np.array(SLOW["speeds"])
    low, high = sps.t.interval(0.95, df=4, loc=v.mean(), scale=sps.sem(v))
    assert (torch["samples_per_second_ci_low"], torch["samples_per_second_ci_high"]) == pytest.approx((low, high))


def test_speed_ratio_is_welch_on_log_throughput_and_loss_difference_is_paired():
    summary = stats.summarize(rows("jax", **FAST) + rows("torch", **SLOW), VAE_METRICS)
    torch = next(s for s in summary if s["backend"] == "torch")
    jax = next(s for s in summary if s["backend"] == "jax")
    fast, slow = np.log(FAST["speeds"]), np.log(SLOW["speeds"])
    ci = sps.ttest_ind(fast, slow, equal_var=False).confidence_interval(0.95)
    assert torch["fastest"] == jax["fastest"] == "jax"
    assert torch["speedup_of_fastest"] == pytest.approx(np.exp(fast.mean() - slow.mean()), rel=1e-12)
    assert (torch["speedup_ci_low"], torch["speedup_ci_high"]) == pytest.approx((np.exp(ci.low), np.exp(ci.high)))
    assert torch["speedup_significant"] is True
    paired = sps.ttest_rel(SLOW["losses"], FAST["losses"]).confidence_interval(0.95)
    assert torch["test_loss_diff"] == pytest.approx(np.mean(np.subtract(SLOW["losses"], FAST["losses"])))
    interval = (torch["test_loss_diff_ci_low"], torch["test_loss_diff_ci_high"])
    assert interval == pytest.approx((paired.low, paired.high))
    assert torch["test_loss_diff_significant"] is False
    # the fastest against itself: ratio 1, difference 0
    assert jax["speedup_of_fastest"] == pytest.approx(1.0) and jax["test_loss_diff"] == 0.0


def test_one_seed_has_no_interval_and_summary_is_json():
    summary = stats.summarize(rows("torch", [4000.0], [120.0], [128.0]), VAE_METRICS)
    (s,) = summary
    assert s["n"] == 1 and s["test_loss_mean"] == 120.0
    assert s["test_loss_std"] is None and s["test_loss_ci_low"] is None and s["speedup_ci_low"] is None
    json.dumps(summary, allow_nan=False)  # no NaN reaches sweep.json


def test_comparison_sentence():
    from harness.reporting.sweep_report import comparison_sentences
    (line,) = comparison_sentences(stats.summarize(rows("jax", **FAST) + rows("torch", **SLOW), VAE_METRICS))
    assert line.startswith("jax is 1.31x (")
    assert "faster than torch on cpu" in line and line.endswith("with no significant loss difference")


# ---------------------------------------------------------------------------------- spec and flags

def parse(*argv: str) -> sweep.SweepSpec:
    return cli_sweep.spec_from_args(cli.build_parser().parse_args(["sweep", *argv]))[0]


def test_jobs_are_the_product_of_the_axes():
    spec = parse("--backends", "torch,jax", "--device", "cpu", "--seeds", "1-3", "--latent-dims", "2,20")
    jobs = spec.jobs()
    assert len(jobs) == 2 * 3 * 2 and len({j.id for j in jobs}) == 12
    assert jobs[0].id == "torch-cpu-z2-s1" and jobs[0].run_dir == jobs[0].id
    config = spec.job_config(jobs[-1], threads=1)
    assert config.backends == ("jax",) and config.seed == 3 and config.model.latent_dim == 20
    assert config.model == ModelConfig(latent_dim=20)


def test_toml_spec_equals_flags(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text('backends = ["torch", "jax"]\ndevices = ["cpu"]\nseeds = "1-3"\nepochs = 2\n'
                    'latent_dims = [2, 20]\nout = "x"\n')
    from_file = parse("--spec", str(path))
    from_flags = parse("--backends", "torch,jax", "--seeds", "1-3", "--epochs", "2", "--latent-dims", "2,20")
    assert from_file == from_flags
    assert parse("--spec", str(path), "--epochs", "5").base.epochs == 5  # a flag wins over the file


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "1-x"], "is not a seed list"),
    (["--latent-dims", "0,2"], "latent sizes must be positive"),
    (["--device", "cuda:1"], "spreads 'cuda' jobs"),
    (["--backends", "torch,nope"], "unknown backend 'nope'"),
    (["--seeds", "1,1"], "seeds repeat a value"),
    (["--executor", "ray", "--device", "auto"], "with --executor ray name cpu or cuda"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys, tmp_path):
    assert cli.main(["sweep", *argv, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_ray_is_one_line(monkeypatch, capsys, tmp_path):
    from harness.sweeps import executors
    monkeypatch.setitem(sys.modules, "ray", None)  # how Python itself marks a module as not importable
    with pytest.raises(HarnessError) as exc:
        executors.create(parse("--backends", "torch", "--executor", "ray"), None, "test")
    assert str(exc.value) == "executor 'ray' needs the ray extra: pip install -e '.[ray]'"
    assert cli.main(["sweep", "--backends", "torch", "--executor", "ray", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: executor 'ray' needs the ray extra: pip install -e")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()  # refused before anything was written


# ---------------------------------------------------------------------------------- a real sweep

def _read(sweep_dir: Path) -> dict:
    try:
        return json.loads((sweep_dir / sweep.SWEEP_FILE).read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory):
    """A 4-job sweep stopped by SIGTERM during a job, then finished with --resume.

    Returns (folder, sweep.json after the interrupt, stderr of the interrupted driver, finished files'
    bytes before the resume, --resume's exit code).
    """
    from harness import data
    try:
        data_dir, _ = data.locate()
    except HarnessError as e:
        pytest.skip(f"no MNIST for the sweep tests: {e}")
    out = tmp_path_factory.mktemp("sweep") / "s"
    argv = ["sweep", "--backends", "torch", "--seeds", "1-2", "--latent-dims", "2,20", *TINY,
            "--data-dir", str(data_dir), "--out", str(out)]
    driver = subprocess.Popen([sys.executable, "-m", "harness", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while driver.poll() is None and time.monotonic() < deadline:
        statuses = [j["status"] for j in _read(out).get("jobs", [])]
        if "ok" in statuses and "running" in statuses:
            time.sleep(1.0)  # into the job: its child process is starting or training
            driver.send_signal(signal.SIGTERM)
            break
        time.sleep(0.1)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr
    after_interrupt = _read(out)
    finished = {j["run_dir"]: (out / j["run_dir"] / "results.json").read_bytes()
                for j in after_interrupt["jobs"] if j["status"] == "ok"}
    rc = cli.main(["sweep", "--resume", str(out), "--data-dir", str(data_dir)])
    return out, after_interrupt, stderr, finished, rc


def test_interrupted_sweep_keeps_finished_jobs(interrupted_then_resumed):
    out, after, stderr, finished, _ = interrupted_then_resumed
    statuses = [j["status"] for j in after["jobs"]]
    assert "interrupted" in statuses and "running" not in statuses and finished
    assert f"python -m harness sweep --resume {out}" in stderr and len(stderr.strip().splitlines()) == 1


def test_resume_skips_finished_jobs_and_reruns_the_rest(interrupted_then_resumed):
    out, after, _, finished, rc = interrupted_then_resumed
    state = _read(out)
    assert rc == 0 and [j["status"] for j in state["jobs"]] == ["ok"] * 4
    attempts = {j["run_dir"]: j["attempts"] for j in state["jobs"]}
    for run_dir, before in finished.items():
        assert (out / run_dir / "results.json").read_bytes() == before  # untouched by the resume
        assert attempts[run_dir] == 1
    assert any(a == 2 for a in attempts.values())  # the interrupted job ran again


def test_each_job_is_a_harness_run(interrupted_then_resumed):
    out = interrupted_then_resumed[0]
    state = _read(out)
    assert set(state) >= {"spec", "jobs", "summary"}
    for job in state["jobs"]:
        assert set(job) >= {"backend", "device", "seed", "latent_dim", "status", "run_dir", "error"}
        record = json.loads((out / job["run_dir"] / "results.json").read_text())
        assert record["config"]["backends"] == ["torch"] and record["config"]["seed"] == job["seed"]
        assert record["config"]["model"]["latent_dim"] == job["latent_dim"]
        with np.load(out / job["run_dir"] / "torch" / "params.npz") as params:
            assert params["fc21.weight"].shape == (job["latent_dim"], 400)
        assert job["work_seconds"] > 0
        # a job resumed from its checkpoint has no overhead figure: its wall time covers only the last part
        assert job["overhead_seconds"] is None or job["overhead_seconds"] > 0
    assert sum(j["overhead_seconds"] is not None for j in state["jobs"]) >= 3
    assert [(s["latent_dim"], s["n"]) for s in state["summary"]] == [(2, 2), (20, 2)]


def test_sweep_report(interrupted_then_resumed, tmp_path):
    from harness.reporting.sweep_report import LATENT_FIGURE, LOSS_FIGURE, THROUGHPUT_FIGURE, write_sweep_report
    out = interrupted_then_resumed[0]
    path = write_sweep_report(out, tmp_path / "report")
    text = path.read_text()
    assert "## Summary" in text and "## `test_loss` against latent size" in text and "test_loss_sampled" in text
    assert "## Roofline" in text and "| torch | cpu | 2 | 2 | not measured | not measured |" in text  # no probe
    for figure in (LOSS_FIGURE, THROUGHPUT_FIGURE, LATENT_FIGURE):
        assert (tmp_path / "report" / figure).stat().st_size > 1000


def test_pinned_processes_run_the_same_job(interrupted_then_resumed, tmp_path):
    """The one-job-per-GPU machinery, exercised with a CPU job, an empty CUDA_VISIBLE_DEVICES and one
    core: the job spec and the record carry the slot's cores."""
    from harness import data
    from harness.sweeps import executors, placement
    out = interrupted_then_resumed[0]
    state = sweep.load(out)
    job = sweep.SweepJob.from_dict({**vars(state.jobs[0]), "status": "pending", "attempts": 0})
    outcomes = []
    executor = executors.LocalExecutor(data.locate()[0], "test")
    core = max(os.sched_getaffinity(0))
    executor.run_pinned([job], state.spec, tmp_path, [placement.Slot("", (core,))], 0,
                        on_start=lambda j: None, on_done=lambda j, o: outcomes.append(o))
    (outcome,) = outcomes
    assert outcome.status == "ok"
    assert outcome.record.environment["env"]["CUDA_VISIBLE_DEVICES"] == ""
    assert outcome.record.results[0].cores == [core] and outcome.record.results[0].threads == 1
    spec = json.loads((tmp_path / job.run_dir / job.backend / "job.json").read_text())
    assert spec["cores"] == [core]
    mine, theirs = (json.loads((d / job.run_dir / "results.json").read_text())["results"][0]["epochs"]
                    for d in (tmp_path, out))
    assert [(e["train_loss"], e["metrics"]) for e in mine] == [(e["train_loss"], e["metrics"]) for e in theirs]
