"""Restoring params and Adam state (parity, --resume, warm-up) puts every tensor where Adam would.

The rule under test (backends/torch/common.py `set_state`): after a restore, every optimiser state
tensor has the device, dtype, shape and strides that a real `opt.step()` on a fresh optimiser gives,
for every Adam configuration the backends use; existing state is overwritten in place (compiled and
captured graphs hold those tensors); get_state -> set_state -> get_state is exact, and training goes on
exactly as if it had never stopped. The helpers are shared with tests/test_torch_cuda.py, which runs the
same rule on a GPU, where the devices differ (fused or capturable Adam keeps `step` on the GPU).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import backends
from backends.torch import common as tc
from backends.torch import compile as tcmp
from backends.base import pass_noise
from harness.config import ModelConfig, RunConfig
from harness.draws import epoch_permutation
from harness.verification import parity

M = ModelConfig()
# Every Adam configuration a backend uses on the CPU; capturable without fused needs a GPU (see
# tests/test_torch_cuda.py).
CPU_CONFIGS = [{}, {"fused": True}, {"foreach": True}, {"foreach": False}, {"fused": True, "capturable": True}]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compile afresh in each test: dynamo's per-function recompile limit counts every backend instance
    that a long test process creates, and past it the compiled Adam step silently runs eagerly."""
    torch._dynamo.reset()


def config_id(kw: dict) -> str:
    return "+".join(k if v is True else f"{k}={v}" for k, v in kw.items()) or "default"


def make(kw: dict, device: str = "cpu", seed: int = 0):
    torch.manual_seed(seed)
    model = tc.build_model(M).to(device, torch.float32)
    return model, tc.make_adam(model, M, torch.device(device), **kw)


def batch(device: str = "cpu", n: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((n, M.input_dim), dtype=np.float32)).to(device)
    eps = torch.from_numpy(rng.standard_normal((n, M.latent_dim), dtype=np.float32)).to(device)
    return x, eps


def train_steps(model, opt, steps: int, device: str = "cpu", first_seed: int = 0) -> list[float]:
    losses = []
    for s in range(steps):
        x, eps = batch(device, seed=first_seed + s)
        opt.zero_grad(set_to_none=True)
        loss = _loss(model, x, eps)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _loss(model, x, eps):
    logits, mu, logvar = model(x, eps)
    return tc.loss_sum(logits, x, mu, logvar)


def placement(opt, model) -> dict[str, tuple]:
    """Device, dtype, shape, strides and layout of every optimiser state tensor, by param and key."""
    return {f"{n}/{k}": (t.device, t.dtype, tuple(t.shape), t.stride(), t.layout)
            for n, p in model.named_parameters() for k, t in opt.state[p].items()}


def assert_restore_places_state_like_a_real_step(kw: dict, device: str) -> None:
    """A fresh optimiser restored from a state matches, tensor by tensor, one that really stepped."""
    model, opt = make(kw, device)
    train_steps(model, opt, 2, device)
    fresh_model, fresh_opt = make(kw, device, seed=1)
    assert not fresh_opt.state
    tc.set_state(fresh_model, fresh_opt, tc.get_state(model, opt))
    assert placement(fresh_opt, fresh_model) == placement(opt, model)
    assert_states_equal(tc.get_state(fresh_model, fresh_opt), tc.get_state(model, opt))


def assert_states_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def state_tensors(model, opt) -> list[torch.Tensor]:
    return [p for p in model.parameters()] + [t for p in model.parameters() for t in opt.state[p].values()]


@pytest.mark.parametrize("kw", CPU_CONFIGS, ids=config_id)
def test_restored_state_is_placed_like_a_real_step(kw):
    assert_restore_places_state_like_a_real_step(kw, "cpu")


@pytest.mark.parametrize("kw", [{}, {"fused": True}], ids=config_id)
def test_restore_follows_torchs_placement_rule_rather_than_a_copy_of_it(kw):
    """Under a float64 default dtype Adam keeps a non-fused `step` in float64 and a fused one in
    float32: a restore that builds the tensors itself gets one of the two wrong."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert_restore_places_state_like_a_real_step(kw, "cpu")
    finally:
        torch.set_default_dtype(default)


@pytest.mark.parametrize("kw", CPU_CONFIGS, ids=config_id)
def test_restore_into_existing_state_is_in_place(kw):
    model, opt = make(kw)
    train_steps(model, opt, 1)
    saved = tc.get_state(model, opt)
    before = [(id(t), t.data_ptr()) for t in state_tensors(model, opt)]
    train_steps(model, opt, 2, first_seed=5)
    tc.set_state(model, opt, saved)
    assert [(id(t), t.data_ptr()) for t in state_tensors(model, opt)] == before
    assert_states_equal(tc.get_state(model, opt), saved)


@pytest.mark.parametrize("kw", CPU_CONFIGS, ids=config_id)
def test_round_trip_is_exact_and_training_continues_identically(kw):
    model, opt = make(kw)
    train_steps(model, opt, 3)
    saved = tc.get_state(model, opt)
    assert int(saved["adam.step"]) == 3
    other_model, other_opt = make(kw, seed=7)
    tc.set_state(other_model, other_opt, saved)
    assert_states_equal(tc.get_state(other_model, other_opt), saved)
    assert train_steps(model, opt, 2, first_seed=10) == train_steps(other_model, other_opt, 2, first_seed=10)
    assert_states_equal(tc.get_state(other_model, other_opt), tc.get_state(model, opt))


def test_restoring_the_initial_state_matches_a_fresh_optimizer():
    """Parity restores step-0 states (zero moments) before any step: the next step is Adam's first."""
    model, opt = make({"fused": True})
    restored_model, restored_opt = make({"fused": True})
    tc.set_state(restored_model, restored_opt, tc.get_state(model, opt))
    assert train_steps(model, opt, 2) == train_steps(restored_model, restored_opt, 2)
    assert_states_equal(tc.get_state(restored_model, restored_opt), tc.get_state(model, opt))


def small_backend(name: str, n: int = 300, **config):
    from harness import data
    mnist = data.load()
    b = backends.create(name)
    b.setup(parity.init_params(1), mnist.train_x[:n], mnist.test_x[:100], RunConfig(train_limit=n, **config))
    return b


def epoch(b, e: int, n: int = 300) -> float:
    return b.train_epoch(epoch_permutation(1, e, n), pass_noise("harness", 1, e, n, M.latent_dim))


@pytest.mark.parametrize("name", ["torch", "torch-compile", "torch-reference"])
def test_backend_resumes_exactly(name):
    """--resume: a fresh backend restored from a checkpoint trains on exactly like the original."""
    original = small_backend(name)
    original.warmup()
    epoch(original, 1)
    saved = original.get_state()
    resumed = small_backend(name)
    resumed.warmup()
    resumed.set_state(saved)
    assert_states_equal(resumed.get_state(), saved)
    assert epoch(resumed, 2) == epoch(original, 2)
    assert_states_equal(resumed.get_state(), original.get_state())


def test_torch_compile_warmup_restores_state_in_place():
    b = small_backend("torch-compile")
    b.warmup()
    epoch(b, 1)
    saved = b.get_state()
    before = [(id(t), t.data_ptr()) for t in state_tensors(b.model, b.opt)]
    b.warmup()
    assert [(id(t), t.data_ptr()) for t in state_tensors(b.model, b.opt)] == before
    assert_states_equal(b.get_state(), saved)


class EmulatedGraphs(tcmp.StepGraphs):
    """StepGraphs without CUDA: `capture` runs the warm-up steps (they train, as on a GPU, where the
    capture itself computes nothing) and `replay` runs the step on the static inputs (the loss buffer
    has the shape before the batch axis: () for one seed, (N,) for an ensemble)."""

    def capture(self, x, eps):
        static_x, static_eps = x.clone(), eps.clone()
        for _ in range(tcmp.GRAPH_WARMUP_STEPS):
            self.step(static_x, static_eps)
        self.graphs[x.shape[self.batch_axis]] = (None, static_x, static_eps, torch.zeros(x.shape[:self.batch_axis]))

    def replay(self, size):
        _, static_x, static_eps, loss = self.graphs[size]
        return loss.copy_(self.step(static_x, static_eps))


def test_cuda_graph_arrangement_logic_on_cpu(monkeypatch):
    """The bookkeeping of the CUDA-graph arrangement (static inputs, lazy capture, state restored around
    capture, the partial batch) computes what the compiled step computes. The graphs themselves need
    a GPU: tests/test_torch_cuda.py."""
    plain = small_backend("torch-compile")
    monkeypatch.setattr(tcmp, "arrangement", lambda device, mode: "cuda-graph-step")
    monkeypatch.setattr(tcmp, "StepGraphs", EmulatedGraphs)
    graphed = small_backend("torch-compile")
    assert graphed.describe()["arrangement"] == "cuda-graph-step"
    assert graphed.describe()["optimizer"] == "Adam(fused=True, capturable=True)"
    initial = graphed.get_state()
    graphed.warmup()
    assert sorted(graphed.graphs.graphs) == [44, 128]
    assert_states_equal(graphed.get_state(), initial)
    for e in (1, 2):
        assert epoch(graphed, e) == pytest.approx(epoch(plain, e), rel=1e-6)
    for k, v in plain.get_state().items():
        np.testing.assert_allclose(graphed.get_state()[k], v, rtol=1e-5, atol=1e-7, err_msg=k)
    lockstep = small_backend("torch-compile")  # no warm-up: lockstep captures on first use
    lockstep.set_state(plain.get_state())
    x, eps = batch(n=44)
    loss = lockstep.lockstep_step(x.numpy(), eps.numpy())
    assert loss == pytest.approx(plain.lockstep_step(x.numpy(), eps.numpy()), rel=1e-6)
    assert list(lockstep.graphs.graphs) == [44]
