"""The conv VAE workload (workloads/conv_vae/) through every engine: the same init, the same training step
as the float64 oracle, the command line, and a real epoch on all of MNIST inside the calibrated band.
"""
from __future__ import annotations

import numpy as np
import pytest

import backends
from harness.config import ModelConfig, RunConfig
from harness.draws import init_params
from harness.measurement import results
from harness.verification import parity, targets
from harness.verification.agreement import experiment
from tests.conftest import SMALL, assert_one_line_error, harness

CONV = ModelConfig(workload="conv-vae")
BACKENDS = ["torch", "torch-compile", "torch-reference", "jax"]
STEPS = 3


def test_init_is_bitwise_identical_across_frameworks(mnist):
    """init_params(3) for the conv VAE, loaded by each engine and read back, is the same bits everywhere."""
    n = 300
    params = init_params(3, CONV)
    assert list(params) == list(CONV.param_order()) and all(v.dtype == np.float32 for v in params.values())
    config = RunConfig(model=CONV, train_limit=n, test_limit=100, threads=1)
    states = {}
    for name in BACKENDS:
        b = backends.create(name)
        b.setup(params, mnist.train_x[:n], mnist.test_x[:100], config)
        states[name] = b.get_state()
    for name, state in states.items():
        for k, v in params.items():
            got = np.asarray(state[k])
            assert got.dtype == np.float32 and got.shape == v.shape, (name, k, got.dtype, got.shape)
            assert got.tobytes() == v.tobytes(), (name, k)
    # The rest of the state (Adam's zero moments and step 0) agrees too: one framework-neutral layout.
    first = states[BACKENDS[0]]
    for name, state in states.items():
        assert set(state) == set(first), name
        for k in first:
            a, b = np.asarray(state[k]), np.asarray(first[k])
            assert a.shape == b.shape and a.tobytes() == b.astype(a.dtype).tobytes(), (name, k)


@pytest.fixture(scope="module")
def conv_parity(mnist):
    """One float64 oracle chain, every engine and two mutants teacher-forced along it."""
    config = RunConfig(model=CONV, threads=1)
    reports = parity.run(BACKENDS + ["mutant-mean", "mutant-adam-eps"], mnist.train_x, STEPS, config)
    return {r.backend: r for r in reports}


@pytest.mark.parametrize("backend", BACKENDS)
def test_lockstep_parity_on_cpu(conv_parity, backend):
    report = conv_parity[backend]
    assert len(report.outliers) == STEPS
    assert set(report.worst) == set(CONV.param_order())
    assert report.ok, (report.outliers, report.max_loss_rel_err, report.worst)


def test_parity_fails_a_wrong_loss_and_a_wrong_adam_for_conv(conv_parity):
    """Negative controls (tests/plugin_backends.py): the check is not vacuous for the conv workload.

    mutant-mean (loss averaged over the batch instead of summed) fails the per-step loss check;
    mutant-adam-eps (eps inside the square root) leaves the loss alone and fails the parameter check."""
    mean, eps = conv_parity["mutant-mean"], conv_parity["mutant-adam-eps"]
    assert not mean.ok and mean.max_loss_rel_err > 100 * parity.LOSS_RTOL
    assert not eps.ok and eps.max_loss_rel_err <= parity.LOSS_RTOL
    assert max(eps.outliers) > 10 * parity.KINK_BUDGET, eps.outliers


def test_cli_parity_for_conv():
    proc = harness("parity", "--workload", "conv-vae", "--steps", "2", "--backends", "torch,jax", "--threads", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "conv1.weight" in proc.stdout and "deconv3.bias" in proc.stdout  # the conv VAE's tensors were judged
    assert "all 2 backends agree" in proc.stdout


def test_cli_unknown_workload_is_one_line(tmp_path):
    proc = harness("run", "--workload", "nope", "--backends", "torch", "--out", tmp_path, *SMALL, timeout=60)
    assert_one_line_error(proc, "--workload", "'nope'", "conv-vae")


@pytest.mark.slow
def test_one_epoch_on_all_of_mnist_is_in_the_calibrated_band(tmp_path):
    """torch and jax, 1 epoch, seed 1, all of MNIST: epoch-1 test_loss and test_loss_sampled in the
    `conv-ci` bands of harness/verification/targets.toml (calibrated on other seeds), and the two
    backends within the calibrated same-seed gap."""
    profile = targets.get_profile("conv-ci")  # read first: without the profile there is nothing to judge by
    assert (profile.calibrated_on.get("model") or {}).get("workload") == "conv-vae", profile.calibrated_on
    assert profile.epochs == 1 and 1 in profile.per_epoch
    proc = harness("run", "--workload", "conv-vae", "--backends", "torch,jax", "--epochs", "1", "--threads", "2",
                   "--no-probe", "--no-report", "--seed", "1", "--out", tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = results.load(tmp_path)
    assert record.config.model.workload == "conv-vae"
    assert record.config.seed not in profile.calibration.get("seeds", []), "the check seed must not be a calibration seed"
    # The band is for this experiment (cpu, float32, all of MNIST, shared noise, the conv model config).
    epoch1 = profile.at(1, experiment(record.config))
    assert epoch1 is not None, f"conv-ci was calibrated on {profile.calibrated_on}, this run is {experiment(record.config)}"
    losses = {}
    for r in record.results:
        assert r.status == "ok" and len(r.epochs) == 1, (r.backend, r.status, r.error)
        m = r.epochs[0].metrics
        for metric in ("test_loss", "test_loss_sampled"):
            band = epoch1.bands[metric]
            assert band.contains(m[metric]), f"{r.backend} {metric} {m[metric]:.3f} outside {band.text()} ({band.derivation})"
        losses[r.backend] = m["test_loss"]
    assert sorted(losses) == ["jax", "torch"]
    assert max(losses.values()) - min(losses.values()) <= epoch1.max_backend_difference, losses
