"""The IWAE evaluation: framework estimates against the float64 oracle, the bound's orderings, the shared
noise, the report's column and manifold figures, and bad K.

The model is the reference VAE trained for 60 float64 NumPy steps on real MNIST (a second or two):
trained enough that its posteriors are narrow and its importance weights peaky, which is where a
careless log-sum-exp or a float32 slip would show. Few test images and small K keep every test short.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp

from harness import atomic, cli
from harness.config import ModelConfig, RunConfig
from harness.draws import epoch_noise, epoch_permutation, init_params, iwae_noise
from harness.errors import HarnessError
from harness.evaluation import evaluate, iwae
from harness.measurement import results
from harness.measurement.results import BackendResult, EpochRecord, RunRecord
from harness.reporting import evaluation_report, report
from harness.verification import oracle
from tests.conftest import assert_one_line_error, harness
from workloads.mlp_vae import oracle as mlp_oracle

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_IMAGES = 64  # oracle subset: K = 1000 decodes 64,000 rows in float64 (a few seconds)
KS = (1, 10, 100, 1000)


def trained(mnist, latent: int = 20, steps: int = 60) -> dict[str, np.ndarray]:
    """float32 params after `steps` reference Adam steps from init_params(1) on MNIST batches."""
    model = ModelConfig(latent_dim=latent)
    perm = epoch_permutation(1, 1, 60_000)[: steps * 128].reshape(steps, 128)
    noise = epoch_noise(1, 1, steps * 128, latent).reshape(steps, 128, latent)
    params, _ = oracle.train_steps(init_params(1, model), [mnist.train_x[i] for i in perm], list(noise), model)
    return {k: v.astype(np.float32) for k, v in params.items()}


@pytest.fixture(scope="module")
def params(mnist):
    return trained(mnist)


@pytest.fixture(scope="module")
def oracle_bounds(params, mnist) -> dict[int, np.ndarray]:
    """Per-image float64 bounds of the first N_IMAGES test images for each K in KS, seed 1."""
    return {k: iwae.estimate(params, mnist.test_x[:N_IMAGES], k, seed=1, model=ModelConfig()) for k in KS}


def make_run(run_dir: Path, params: dict[str, np.ndarray], names: tuple[str, ...]) -> Path:
    """A finished run folder (results.json, <backend>/params.npz) of `names`, all holding `params`."""
    latent = params["fc21.weight"].shape[0]
    config = RunConfig(backends=names, epochs=1, model=ModelConfig(latent_dim=latent))
    epoch = EpochRecord(1, 150.0, {"test_loss": 140.0, "test_loss_sampled": 145.0}, 1.0, 0.1, 60_000.0, 100_000.0, 1.2)
    out = [BackendResult(backend=b, device="cpu", seed=1, status="ok", epochs=[epoch], params_file="params.npz")
           for b in names]
    for b in names:
        atomic.write_npz(run_dir / b / "params.npz", params)
    results.save(RunRecord(config=config.to_dict(), environment={}, results=out), run_dir)
    return run_dir


# ---------------------------------------------------------------- the noise and the oracle

def test_noise_of_an_image_does_not_depend_on_its_batch():
    whole = iwae_noise(7, 50, 0, 10, 3)
    assert whole.dtype == np.float32 and whole.shape == (10, 50, 3)
    np.testing.assert_array_equal(iwae_noise(7, 50, 4, 6, 3), whole[4:6])
    assert not np.array_equal(iwae_noise(7, 51, 0, 1, 3)[0, :50], whole[0])  # K is part of the seed
    assert not np.array_equal(iwae_noise(8, 50, 0, 1, 3), whole[:1])


def test_log_mean_exp_is_stable_where_exp_underflows():
    a = np.array([[-1000.0, -1001.0, -1002.0], [5.0, 5.0, 5.0], [-np.inf, -np.inf, -np.inf]])
    np.testing.assert_allclose(iwae.log_mean_exp(a)[:2], logsumexp(a[:2], axis=1) - np.log(3))
    assert iwae.log_mean_exp(a)[2] == -np.inf


def test_k1_is_the_single_sample_elbo(params, mnist):
    """K = 1: the bound is -(BCE + log q(z|x) - log p(z)) at z = mu + sigma * eps, term by term."""
    x, eps = mnist.test_x[:64], iwae_noise(1, 1, 0, 64, 20)
    f = mlp_oracle.forward(params, x, eps[:, 0])
    log_q = -0.5 * np.sum(eps[:, 0].astype(np.float64) ** 2 + f["logvar"] + np.log(2 * np.pi), axis=1)
    log_p = -0.5 * np.sum(f["z"] ** 2 + np.log(2 * np.pi), axis=1)
    bounds = iwae.estimate(params, x, 1, seed=1, model=ModelConfig())
    np.testing.assert_allclose(-bounds.sum(), f["bce"] + np.sum(log_q - log_p), rtol=1e-12)


def test_k1_agrees_with_test_loss_sampled_on_average(params, mnist, oracle_bounds):
    """Monte Carlo KL (K = 1) against the analytic KL of test_loss_sampled: equal in expectation."""
    x = mnist.test_x[:N_IMAGES]
    sampled = np.array([mlp_oracle.forward(params, x[i:i + 1], e[None])["loss"]
                        for i, e in enumerate(epoch_noise(1, 0, N_IMAGES, 20))])
    diff = -oracle_bounds[1] - sampled
    assert abs(diff.mean()) <= 3 * diff.std(ddof=1) / np.sqrt(diff.size)


def test_nll_falls_as_k_grows(oracle_bounds):
    nll = [iwae.nll_and_stderr(oracle_bounds[k])[0] for k in KS]
    assert all(a > b for a, b in zip(nll, nll[1:])), nll


def test_nll_is_below_test_loss_sampled_on_average(params, mnist, oracle_bounds):
    x = mnist.test_x[:N_IMAGES]
    f = mlp_oracle.forward(params, x, epoch_noise(1, 0, N_IMAGES, 20))  # what test_loss_sampled computes
    nll, stderr = iwae.nll_and_stderr(oracle_bounds[1000])
    assert nll < f["loss"] / N_IMAGES, (nll, f["loss"] / N_IMAGES)


# ---------------------------------------------------------------- each framework against the oracle

@pytest.mark.parametrize("backend,framework", [("torch", "torch"), ("jax", "jax")])
def test_framework_estimate_matches_the_oracle(backend, framework, params, mnist, oracle_bounds, tmp_path):
    """Through `harness evaluate`'s own path: child process, results.json, bounds file."""
    pytest.importorskip(framework)
    run_dir = make_run(tmp_path / "run", params, (backend,))
    opts = evaluate.Options(k=100, test_limit=N_IMAGES, threads=1)
    assert evaluate.evaluate_run(run_dir, opts, mnist.directory, say=lambda line: None) == []
    record = results.load(run_dir)
    e = record.results[0].evaluation["iwae_subset"]  # a test subset never takes the whole-set slot
    assert "iwae" not in record.results[0].evaluation
    nll, stderr = iwae.nll_and_stderr(oracle_bounds[100])
    assert (e["k"], e["test_samples"], e["device"].split(":")[0]) == (100, N_IMAGES, "cpu")
    assert abs(e["nll"] - nll) <= stderr
    per_image = np.load(run_dir / backend / e["bounds_file"])
    assert np.max(np.abs(per_image - oracle_bounds[100])) < 1e-3  # float32 against float64, nats
    assert record.results[0].epochs[0].metrics["test_loss"] == 140.0  # the rest of the record is untouched


def test_each_backend_is_evaluated_by_its_own_framework():
    assert {b: evaluate.evaluator_module(b) for b in ("torch", "torch-compile", "torch-reference", "jax")} == {
        "torch": "backends.torch.iwae", "torch-compile": "backends.torch.iwae",
        "torch-reference": "backends.torch.iwae", "jax": "backends.jax.iwae"}


# ---------------------------------------------------------------- command line and report

@pytest.mark.parametrize("k", ["0", "-5", "2.5", "many"])
def test_bad_k_is_refused_before_any_work(k, tmp_path):
    with pytest.raises(HarnessError, match="argument --iwae: K must be a positive integer"):
        cli.build_parser().parse_args(["evaluate", str(tmp_path), f"--iwae={k}"])


def test_bad_k_is_one_line(tmp_path):
    proc = harness("evaluate", str(tmp_path), "--iwae", "-5")
    assert_one_line_error(proc, "--iwae", "K must be a positive integer", "'-5'")


def test_report_shows_the_nll_column_labelled_with_k(params, tmp_path):
    run_dir = make_run(tmp_path / "run", params, ("torch", "jax"))
    record = results.load(run_dir)
    record.results[0].evaluation = {"iwae": {"k": 500, "nll": 93.125, "stderr": 0.25, "test_samples": 10_000}}
    results.save(record, run_dir)
    frame = report.summary_frame(report.load_entries([(run_dir, results.load(run_dir))]))
    assert list(frame.columns[3:6]) == ["final test_loss", "final test_loss_sampled", "NLL (IWAE, K=500)"]
    assert list(frame["NLL (IWAE, K=500)"]) == ["93.12 ± 0.25", "-"]


@pytest.mark.parametrize("latent", [2, 20])
def test_manifold_figures_only_for_latent_2(latent, mnist, tmp_path):
    params = init_params(3, dataclasses.replace(ModelConfig(), latent_dim=latent))
    run_dir = make_run(tmp_path / "run", params, ("jax",))
    text = report.write_report([run_dir], tmp_path / "out").read_text()
    figures = sorted(p.name for p in (tmp_path / "out" / "figures").glob("*.png"))
    drawn = [n for n in figures if n.startswith(("manifold-", "posterior-"))]
    if latent == 20:
        assert drawn == [] and "2-D latent manifold" not in text
        return
    assert drawn == ["manifold-jax-cpu.png", "posterior-jax-cpu.png"]
    import matplotlib.image
    for name in drawn:
        path = tmp_path / "out" / "figures" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE and f"figures/{name}" in text
        assert matplotlib.image.imread(path).shape[0] > 500


def test_sweep_table_has_intervals_over_seeds():
    rows = [{"backend": "jax", "device": "cpu", "latent_dim": z, "seed": s,
             "metrics": {"test_loss": 100.0 + s, "test_loss_sampled": 105.0 + s}, "iwae": {"k": 500, "nll": 95.0 + s, "test_samples": 10_000}}
            for z in (2, 5) for s in (1, 2, 3)]
    table = evaluation_report.latent_table(rows)
    assert [(t["latent_dim"], t["n"], t["nll"]["mean"], t["k"]) for t in table] == [(2, 3, 97.0, [500]),
                                                                                       (5, 3, 97.0, [500])]
    assert table[0]["nll"]["ci_low"] < 97.0 < table[0]["nll"]["ci_high"]
    json.dumps(table)  # plain data, ready for a file


def test_a_conv_vae_run_is_evaluated_by_every_backend(tmp_path, mnist):
    """`harness evaluate --iwae 10 --test-limit 64` on a conv-vae run of latent 8 (not the default 20,
    so the run's config, not ModelConfig(), must reach every evaluator): each backend's NLL within the
    NumPy oracle's standard error, image by image within 1e-3 nats (float32 against float64)."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    conv = ModelConfig(workload="conv-vae", latent_dim=8)
    names = ("torch-reference", "torch", "torch-compile", "jax")
    params = init_params(1, conv)
    config = RunConfig(backends=names, epochs=1, model=conv)
    epoch = EpochRecord(1, 150.0, {"test_loss": 140.0, "test_loss_sampled": 145.0}, 1.0, 0.1, 60_000.0, 100_000.0, 1.2)
    for b in names:
        atomic.write_npz(tmp_path / b / "params.npz", params)
    out = [BackendResult(backend=b, device="cpu", seed=1, status="ok", epochs=[epoch], params_file="params.npz")
           for b in names]
    results.save(RunRecord(config=config.to_dict(), environment={}, results=out), tmp_path)
    proc = harness("evaluate", str(tmp_path), "--iwae", "10", "--test-limit", "64", "--threads", "1",
                   "--data-dir", str(mnist.directory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = iwae.estimate(params, mnist.test_x[:64], 10, seed=1, model=conv)
    nll, stderr = iwae.nll_and_stderr(expected)
    for r in results.load(tmp_path).results:
        e = r.evaluation["iwae_subset"]
        assert (e["k"], e["test_samples"]) == (10, 64)
        assert abs(e["nll"] - nll) <= stderr, (r.backend, e["nll"], nll, stderr)
        assert np.max(np.abs(np.load(tmp_path / r.backend / e["bounds_file"]) - expected)) < 1e-3, r.backend


@pytest.mark.parametrize("backend,framework", [("torch", "torch"), ("jax", "jax")])
def test_counter_noise_is_generated_by_the_evaluator_and_matches_the_oracle(backend, framework, params, mnist,
                                                                           tmp_path):
    """`--noise counter`: the framework generates the draws on its device (harness/counter_noise.py);
    its per-image bounds equal the float64 oracle's on the host reference draws, and the record names
    the noise definition."""
    pytest.importorskip(framework)
    from harness.counter_noise import NOISE_DEFINITION
    run_dir = make_run(tmp_path / "run", params, (backend,))
    opts = evaluate.Options(k=100, test_limit=N_IMAGES, threads=1, noise="counter", batch=7)  # 7: a partial last batch
    assert evaluate.evaluate_run(run_dir, opts, mnist.directory, say=lambda line: None) == []
    e = results.load(run_dir).results[0].evaluation["iwae_subset"]
    assert e["noise"] == NOISE_DEFINITION
    reference = iwae.estimate(params, mnist.test_x[:N_IMAGES], 100, seed=1, model=ModelConfig(), noise="counter")
    assert np.max(np.abs(np.load(run_dir / backend / e["bounds_file"]) - reference)) < 1e-3
    harness_draws = iwae.estimate(params, mnist.test_x[:N_IMAGES], 100, seed=1, model=ModelConfig())
    assert not np.allclose(reference, harness_draws)  # other draws: the option does change the noise
