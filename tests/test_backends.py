"""Every backend computes the same training step: lockstep parity against the float64 reference.

Also: mutants that change the loss, the KL sign, the reduction or the Adam variant fail parity, and
torch-compile never recompiles after its warm-up.
"""
from __future__ import annotations

import numpy as np
import pytest

from backends.base import pass_noise
from harness.config import ModelConfig, RunConfig
from harness.draws import epoch_permutation
from harness.verification import parity

STEPS = 50


@pytest.fixture(scope="module")
def lockstep(mnist):
    config = RunConfig(seed=1)
    m = config.model
    batches, noise = parity.lockstep_inputs(mnist.train_x, STEPS, 1, m.batch_size, m.latent_dim)
    chain = parity.oracle_chain(parity.init_params(1), batches, noise, m)

    def run(name: str) -> parity.BackendParity:
        return parity.run_backend(name, chain, config, free_running=False)
    return run


@pytest.mark.parametrize("backend", ["torch", "torch-compile", "jax", "torch-reference"])
def test_backend_matches_float64_reference(lockstep, backend):
    report = lockstep(backend)
    assert report.max_loss_rel_err <= parity.LOSS_RTOL, report.max_loss_rel_err
    assert max(report.outliers) <= parity.KINK_BUDGET, report.outliers
    assert report.ok


@pytest.mark.parametrize("mutant", ["mutant-kl-sign", "mutant-mean", "mutant-adam-eps", "mutant-lr10"])
def test_parity_catches_a_changed_formula(lockstep, mutant):
    assert not lockstep(mutant).ok


def test_backends_exchange_state_exactly(mnist):
    """A checkpoint from one framework loads into another: the state layout is framework-neutral."""
    import backends
    config = RunConfig(train_limit=300, test_limit=100)
    x = mnist.train_x[:300]
    states = {}
    for name in ("torch", "jax"):
        b = backends.create(name)
        b.setup(parity.init_params(1), x, mnist.test_x[:100], config)
        states[name] = b
    states["torch"].train_epoch(epoch_permutation(1, 1, 300), pass_noise("harness", 1, 1, 300, 20))
    saved = states["torch"].get_state()
    states["jax"].set_state(saved)
    back = states["jax"].get_state()
    assert set(back) == set(saved)
    for k in saved:
        np.testing.assert_array_equal(back[k], saved[k], err_msg=k)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
def test_torch_compile_does_not_recompile_after_warmup(mnist, mode):
    """Every --compile-mode runs on the CPU (where CUDA graphs do not exist) and compiles only in warmup()."""
    import torch._dynamo.utils

    import backends
    torch._dynamo.reset()  # compile afresh: the recompile limit counts the compiled backends of earlier tests
    n = 300  # 2 full batches and a partial one of 44: both shapes must be warmed up
    b = backends.create("torch-compile")
    b.setup(parity.init_params(1), mnist.train_x[:n], mnist.test_x[:200], RunConfig(train_limit=n, engine_options={"torch-compile": {"mode": mode}}))
    assert b.describe()["arrangement"] == "compiled-step"
    b.warmup()
    frames = dict(torch._dynamo.utils.counters["frames"])
    for epoch in (1, 2, 3):
        loss = b.train_epoch(epoch_permutation(1, epoch, n), pass_noise("harness", 1, epoch, n, 20))
        b.evaluate(pass_noise("harness", 1, 0, 200, 20))
        assert np.isfinite(loss)
    assert dict(torch._dynamo.utils.counters["frames"]) == frames
    assert ModelConfig().batch_sizes(n) == [128, 128, 44]
