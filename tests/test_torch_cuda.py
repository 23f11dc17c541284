"""CUDA-only behaviour of the torch backends (skipped without a CUDA GPU; benchmarks/gpu_check.sh runs it).

- restored Adam state lands where Adam itself keeps it on a GPU (fused or capturable: `step` on the GPU);
- torch-compile's hand-captured CUDA-graph step computes what the same step computes without the graph,
  full and partial batches, from restored states (so restoring in place keeps the graphs valid);
- in every --compile-mode: warm-up leaves the state as it was, nothing recompiles afterwards (training,
  eval and lockstep), and lockstep parity against the float64 reference passes through the step the
  mode really uses.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.base import pass_noise
from harness.config import ModelConfig, RunConfig
from harness.draws import epoch_permutation
from harness.verification import parity
from tests.test_torch_state import (
    CPU_CONFIGS,
    assert_restore_places_state_like_a_real_step,
    assert_states_equal,
    config_id,
    epoch,
    small_backend,
    state_tensors,
)

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

MODES = ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
ARRANGEMENT = {"default": "cuda-graph-step", "max-autotune-no-cudagraphs": "cuda-graph-step",
               "reduce-overhead": "cudagraph-trees", "max-autotune": "cudagraph-trees"}
CUDA_CONFIGS = CPU_CONFIGS + [{"capturable": True}, {"foreach": True, "capturable": True}]
N = 300  # batches of 128, 128 and a partial 44
STEPS = 4  # lockstep steps over N samples: sizes 128, 128, 44, 128


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compile afresh in each test (see tests/test_torch_state.py)."""
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def chain():
    from harness import data
    m = RunConfig().model
    batches, noise = parity.lockstep_inputs(data.load().train_x[:N], STEPS, 1, m.batch_size, m.latent_dim)
    assert [len(b) for b in batches] == [128, 128, 44, 128]
    return parity.oracle_chain(parity.init_params(1), batches, noise, m)


def frames() -> dict:
    import torch._dynamo.utils
    return dict(torch._dynamo.utils.counters["frames"])


def lockstep_parity(backend, chain) -> None:
    """parity.run_backend's teacher-forced loop, on a backend that is already set up and warmed up."""
    for (x, eps), state, ref_params, ref_loss in zip(chain.inputs, chain.states, chain.params_after, chain.losses):
        backend.set_state(state)
        loss = backend.lockstep_step(x, eps)
        assert abs(loss - ref_loss) <= parity.LOSS_RTOL * abs(ref_loss)
        errs = parity.relative_errors(ref_params, backend.get_state())
        assert sum(int((e > parity.STEP_RTOL).sum()) for e in errs.values()) <= parity.KINK_BUDGET


def assert_close_as_parity_judges(candidate: dict, reference: dict) -> None:
    errs = parity.relative_errors({k: np.asarray(reference[k], np.float64) for k in ModelConfig().param_order()}, candidate)
    assert sum(int((e > parity.STEP_RTOL).sum()) for e in errs.values()) <= parity.KINK_BUDGET


@pytest.mark.parametrize("kw", CUDA_CONFIGS, ids=config_id)
def test_restored_state_is_placed_like_a_real_step_on_cuda(kw):
    assert_restore_places_state_like_a_real_step(kw, "cuda")


@pytest.mark.parametrize("name,mode", [("torch", "default")] + [("torch-compile", m) for m in MODES])
def test_restore_before_the_first_step_puts_adam_state_on_the_gpu(name, mode):
    """The crash of `parity --device cuda` and `--resume`: fused Adam found its `step` on the CPU."""
    b = small_backend(name, device="cuda", engine_options={"torch-compile": {"mode": mode}})
    b.set_state(b.get_state())
    for s in b.opt.state.values():
        assert s["step"].device.type == "cuda" and s["step"].dtype == torch.float32
        assert s["exp_avg"].device.type == "cuda" and s["exp_avg_sq"].device.type == "cuda"
    b.lockstep_step(b.train_x[:128].cpu().numpy(), np.zeros((128, 20), np.float32))


@pytest.mark.parametrize("mode", MODES)
def test_every_compile_mode_warms_up_once_and_matches_the_reference(mode, chain):
    b = small_backend("torch-compile", device="cuda", engine_options={"torch-compile": {"mode": mode}})
    assert b.describe()["arrangement"] == ARRANGEMENT[mode]
    before = b.get_state()
    b.warmup()
    assert_states_equal(b.get_state(), before)
    compiled = frames()
    for e in (1, 2):
        assert np.isfinite(epoch(b, e))
        b.evaluate(pass_noise("harness", 1, 0, 100, 20))
    lockstep_parity(b, chain)
    assert frames() == compiled


def test_torch_eager_matches_the_reference_on_cuda(chain):
    b = small_backend("torch", device="cuda")
    lockstep_parity(b, chain)


def device_batches(b, e: int):
    """The batches and noise of epoch e of the N-sample run, on the device, as train_epoch cuts them."""
    idx = torch.from_numpy(epoch_permutation(1, e, N).astype(np.int64)).to(b.device)
    eps = torch.from_numpy(pass_noise("harness", 1, e, N, 20).eps).to(b.device)
    return [(b.train_x[idx[i:i + 128]], eps[i:i + 128]) for i in range(0, N, 128)]


@pytest.mark.parametrize("mode", ["default", "max-autotune-no-cudagraphs"])
def test_graph_replay_equals_the_plain_step(mode):
    """Teacher-forced: from the same restored state, one graph replay and one uncaptured call of the
    same step give the same loss and the same new state, for full and partial batches."""
    b = small_backend("torch-compile", device="cuda", engine_options={"torch-compile": {"mode": mode}})
    b.warmup()
    epoch(b, 1)  # Adam history first: a first Adam step would amplify any rounding difference to ~lr
    state = b.get_state()
    pointers = [t.data_ptr() for t in state_tensors(b.model, b.opt)]
    for xb, eb in device_batches(b, 2):
        b.set_state(state)
        graph_loss = float(b.step_fn(xb, eb))
        graphed = b.get_state()
        b.set_state(state)
        plain_loss = float(b.plain_step(xb, eb))
        plain = b.get_state()
        assert graph_loss == pytest.approx(plain_loss, rel=1e-6)
        assert int(graphed["adam.step"]) == int(plain["adam.step"]) == int(state["adam.step"]) + 1
        assert_close_as_parity_judges(graphed, plain)
        state = plain
    assert [t.data_ptr() for t in state_tensors(b.model, b.opt)] == pointers


def test_graph_replayed_epoch_equals_the_plain_steps():
    """train_epoch (gather into the static inputs, replay, loss summed on the device) against a loop
    of the uncaptured step over the same batches."""
    b = small_backend("torch-compile", device="cuda")
    b.warmup()
    start = b.get_state()
    loss = epoch(b, 1)
    replayed = b.get_state()
    b.set_state(start)
    plain_loss = sum(float(b.plain_step(xb, eb)) for xb, eb in device_batches(b, 1)) / N
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    assert_close_as_parity_judges(replayed, b.get_state())


@pytest.mark.parametrize("name", ["torch", "torch-compile"])
def test_resume_on_cuda_continues_like_the_original(name):
    original = small_backend(name, device="cuda")
    original.warmup()
    epoch(original, 1)
    saved = original.get_state()
    resumed = small_backend(name, device="cuda")
    resumed.warmup()
    resumed.set_state(saved)
    assert_states_equal(resumed.get_state(), saved)
    assert epoch(resumed, 2) == pytest.approx(epoch(original, 2), rel=1e-5)
    assert_close_as_parity_judges(resumed.get_state(), original.get_state())
