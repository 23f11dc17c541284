"""The JAX backend: exact state exchange, parity with the float64 reference (and torch), Adam's formula,
epoch semantics, determinism, no compilation after warmup, float32 throughout.

Small generated data (300 training samples = 2 * 128 + 44, so the kept partial batch is exercised; 100
test samples) keeps the suite fast; every backend built here shares those shapes and hence jax's
compiled programs.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import backends  # noqa: E402
from backends.base import Noise, VAEBackend, adam_state_keys, pass_noise  # noqa: E402
from backends.jax.engine import JaxBackend, resolve_device  # noqa: E402
from backends.jax.programs import make_adam  # noqa: E402
from harness.config import ModelConfig, RunConfig  # noqa: E402
from harness.draws import epoch_permutation, init_params  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.verification import oracle  # noqa: E402
from workloads.mlp_vae import oracle as mlp_oracle  # noqa: E402

PARAM_ORDER = ModelConfig().param_order()

N_TRAIN, N_TEST = 300, 100
M = ModelConfig()


def mnist_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mostly-zero pixels in [0, 1], like MNIST (about 20% of pixels lit)."""
    x = rng.uniform(0.0, 1.0, (n, M.input_dim)).astype(np.float32)
    x[rng.uniform(size=x.shape) < 0.8] = 0.0
    return x


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return mnist_like(rng, N_TRAIN), mnist_like(rng, N_TEST)


def make(data, seed: int = 1, epoch: str = "auto") -> JaxBackend:
    """A jax engine set up on `data`, its engine option `epoch` as given (auto = scan for the MLP on cpu)."""
    b = JaxBackend()
    b.setup(init_params(seed), data[0], data[1], RunConfig(seed=seed, train_limit=N_TRAIN, test_limit=N_TEST,
                                                           engine_options={"jax": {"epoch": epoch}}))
    return b


def epoch_eps(seed: int, n: int) -> np.ndarray:
    """The noise jax draws itself under `--noise framework`, drawn here outside any jitted function."""
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, M.latent_dim), jnp.float32))


def noise(epoch: int, n: int = N_TRAIN) -> Noise:
    """The harness's noise of `epoch` at seed 1 (epoch 0 = evaluation)."""
    return pass_noise("harness", 1, epoch, n, M.latent_dim)


def assert_states_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def assert_params_close(reference: dict, candidate: dict, rtol: float) -> None:
    rows = oracle.compare({k: reference[k] for k in PARAM_ORDER}, candidate, rtol=rtol, atol=oracle.PARITY_ATOL)
    bad = [(r["name"], r["max_rel_err"]) for r in rows if not r["ok"]]
    assert not bad, bad


@contextlib.contextmanager
def count_compiles():
    """Names of the functions XLA compiles inside the block (jax's own monitoring event)."""
    names: list[str] = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kw.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_registry_creates_a_protocol_backend():
    b = backends.create("jax")
    assert isinstance(b, JaxBackend) and isinstance(b, VAEBackend) and b.name == "jax"


def test_warmup_changes_nothing_and_no_epoch_compiles(data):
    b = make(data)
    before = b.get_state()
    b.warmup()
    assert_states_equal(before, b.get_state())
    with count_compiles() as compiled:
        for epoch in (1, 2):
            loss = b.train_epoch(epoch_permutation(1, epoch, N_TRAIN), noise(epoch))
            b.evaluate(noise(0, N_TEST))
        b.get_state()
        b.synchronize()
    assert compiled == []
    assert math.isfinite(loss)
    with count_compiles() as compiled:  # the counter itself works
        jax.jit(lambda x: x * 3)(jnp.ones(7))
    assert compiled


def test_same_seed_same_numbers(data):
    a, b = make(data), make(data)
    for backend in (a, b):
        backend.warmup()
    runs = []
    for backend in (a, b):
        losses = [backend.train_epoch(epoch_permutation(1, e, N_TRAIN), noise(e)) for e in (1, 2, 3)]
        runs.append((losses, backend.evaluate(noise(0, N_TEST))))
    assert runs[0] == runs[1]
    assert_states_equal(a.get_state(), b.get_state())
    losses = runs[0][0]
    assert all(math.isfinite(v) for v in losses) and losses[2] < losses[0]
    # The noise matters (the comparison above is not vacuous).
    assert a.train_epoch(epoch_permutation(1, 4, N_TRAIN), noise(4)) != b.train_epoch(epoch_permutation(1, 4, N_TRAIN), noise(5))


def test_epoch_is_lockstep_steps_in_permutation_order(data):
    """Batch i = train_x[perm[i*128:(i+1)*128]] with eps[i*128:...]; the 44-sample tail is a step too."""
    train_x = data[0]
    perm, eps = epoch_permutation(1, 1, N_TRAIN), noise(1).eps
    scan, loop, steps = make(data), make(data, epoch="loop"), make(data)
    scan_loss = scan.train_epoch(perm, noise(1))
    loop_loss = loop.train_epoch(perm, noise(1))
    start, total = 0, 0.0
    for size in M.batch_sizes(N_TRAIN):
        total += steps.lockstep_step(train_x[perm[start:start + size]], eps[start:start + size])
        start += size
    assert steps.get_state()["adam.step"] == 3 == scan.get_state()["adam.step"]
    expected = steps.get_state()
    assert_params_close(expected, scan.get_state(), rtol=1e-5)
    assert_params_close(expected, loop.get_state(), rtol=1e-5)
    assert scan_loss == pytest.approx(total / N_TRAIN, rel=1e-6)
    assert loop_loss == pytest.approx(scan_loss, rel=1e-6)


def test_each_epoch_arrangement_describes_itself(data):
    """backend_info records the loop (engine option epoch=loop) as a loop, not as the scan."""
    scan, loop = make(data).describe(), make(data, epoch="loop").describe()
    assert scan["arrangement"] == "jit-scan-epoch" and "lax.scan" in scan["step"]
    assert loop["arrangement"] == "jit-step-loop" and "loop" in loop["step"] and "scan" not in loop["step"]
    assert set(loop) == set(scan)


def test_framework_noise_mode_draws_jax_noise_from_the_seed(data):
    """`--noise framework`: no array is handed over; jax draws normal(key(seed)) itself, in position order."""
    perm, seed = epoch_permutation(1, 1, N_TRAIN), 12345
    own = JaxBackend()
    own.setup(init_params(1), data[0], data[1],
              RunConfig(seed=1, train_limit=N_TRAIN, test_limit=N_TEST, noise="framework"))
    given = make(data)
    assert own.train_epoch(perm, Noise(seed)) == pytest.approx(
        given.train_epoch(perm, Noise(seed, epoch_eps(seed, N_TRAIN))), rel=1e-6)
    assert_params_close(given.get_state(), own.get_state(), rtol=1e-5)


def test_lockstep_matches_float64_reference():
    """Parameters within the parity tolerance after 6 steps, and each step's loss within 1e-6.

    The loss check is the sharp one: a systematic error in Adam's step size shows there first
    (measured: with optax.adam, whose steps are ~6.6e-6 smaller than torch's, 2e-6 to 3e-6 by steps
    5-6; with exact bias corrections <= 1.6e-7). It also pins the SUM loss (not the mean). The 50-step
    comparison on real MNIST is tests/test_backends.py.
    """
    rng = np.random.default_rng(7)
    params = init_params(1)
    batches = [mnist_like(rng, M.batch_size) for _ in range(6)]
    noise = [rng.standard_normal((M.batch_size, M.latent_dim)).astype(np.float32) for _ in range(6)]
    b = JaxBackend()
    b.setup(params, batches[0], batches[0], RunConfig())
    losses = [b.lockstep_step(x, e) for x, e in zip(batches, noise)]
    ref_params, ref_losses = oracle.train_steps(params, batches, noise)
    assert_params_close(ref_params, b.get_state(), rtol=oracle.PARITY_RTOL)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)


def test_state_round_trip_is_exact_and_training_continues(data):
    a = make(data)
    a.train_epoch(epoch_permutation(1, 1, N_TRAIN), noise(1))
    state = a.get_state()
    assert set(state) == set(PARAM_ORDER) | set(adam_state_keys(list(PARAM_ORDER)))
    assert state["adam.step"].dtype == np.int64 and int(state["adam.step"]) == 3
    for name, shape in M.shapes().items():  # torch layout: weights (out, in)
        assert state[name].shape == state[f"adam.m.{name}"].shape == state[f"adam.v.{name}"].shape == shape
    b = make(data, seed=2)
    b.set_state(state)
    assert_states_equal(state, b.get_state())
    a.set_state(state)
    assert_states_equal(state, a.get_state())
    # Both continue identically from the loaded state.
    losses = [x.train_epoch(epoch_permutation(1, 2, N_TRAIN), noise(2)) for x in (a, b)]
    assert losses[0] == losses[1]
    assert_states_equal(a.get_state(), b.get_state())


def test_a_torch_layout_state_continues_like_the_reference():
    """A state written in the neutral layout (weights (out, in), Adam step 3) resumes Adam correctly:
    a wrong step count (bias correction) or a transposed moment would move the parameters by O(lr)."""
    rng = np.random.default_rng(9)
    batches = [mnist_like(rng, M.batch_size) for _ in range(4)]
    noise = [rng.standard_normal((M.batch_size, M.latent_dim)).astype(np.float32) for _ in range(4)]
    p = {k: v.astype(np.float64) for k, v in init_params(3).items()}
    adam = oracle.adam_init(p)
    for x, e in zip(batches[:3], noise[:3]):
        p, adam = oracle.adam_update(p, mlp_oracle.loss_and_grad(p, x, e)[1], adam)
    state = {k: v.astype(np.float32) for k, v in p.items()}
    state.update({f"adam.m.{k}": v.astype(np.float32) for k, v in adam.m.items()})
    state.update({f"adam.v.{k}": v.astype(np.float32) for k, v in adam.v.items()})
    state["adam.step"] = np.array(3, dtype=np.int64)
    b = JaxBackend()
    b.setup(init_params(1), batches[0], batches[0], RunConfig())
    b.set_state(state)
    assert_states_equal(state, b.get_state())
    b.lockstep_step(batches[3], noise[3])
    p32 = {k: v.astype(np.float64) for k, v in state.items() if k in PARAM_ORDER}
    adam32 = oracle.AdamState(3, {k: state[f"adam.m.{k}"] for k in PARAM_ORDER},
                           {k: state[f"adam.v.{k}"] for k in PARAM_ORDER})
    expected, _ = oracle.adam_update(p32, mlp_oracle.loss_and_grad(p32, batches[3], noise[3])[1], adam32)
    assert_params_close(expected, b.get_state(), rtol=oracle.PARITY_RTOL)
    assert int(b.get_state()["adam.step"]) == 4


def test_state_exchange_with_the_torch_backend():
    pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    batches = [mnist_like(rng, M.batch_size) for _ in range(5)]
    noise = [rng.standard_normal((M.batch_size, M.latent_dim)).astype(np.float32) for _ in range(5)]
    th, jx = backends.create("torch"), JaxBackend()
    for b in (th, jx):
        b.setup(init_params(4), batches[0], batches[0], RunConfig(threads=1))
    for x, e in zip(batches[:3], noise[:3]):
        th.lockstep_step(x, e)
    jx.set_state(th.get_state())
    assert_states_equal(th.get_state(), jx.get_state())
    for x, e in zip(batches[3:], noise[3:]):
        for b in (th, jx):
            b.lockstep_step(x, e)
    assert_params_close(th.get_state(), jx.get_state(), rtol=1e-5)
    th.set_state(jx.get_state())  # and back
    assert_states_equal(jx.get_state(), th.get_state())


def adam_updates(tx, p0, grads):
    p = jnp.asarray(p0, jnp.float32)
    opt_state = tx.init(p)
    for g in grads:
        updates, opt_state = tx.update(jnp.asarray(g, jnp.float32), opt_state, p)
        p = optax.apply_updates(p, updates)
    return np.asarray(p), opt_state


def test_adam_is_torch_adam():
    """The backend's Optax Adam == torch.optim.Adam's formula, written out by hand in float64:
    p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), eps OUTSIDE the square root."""
    lr, b1, b2, eps = M.learning_rate, M.beta1, M.beta2, M.adam_eps
    p0 = np.zeros(3)  # so that p IS the sum of the steps, without float32 rounding of a large p
    # Normal gradients, a sign change, and a 1e-8 gradient where eps is of the same size.
    grads = [np.array([0.3, -2.0, 1e-8]), np.array([-0.1, -1.0, 3e-8]), np.array([0.2, 0.5, 2e-8])]
    expected, m, v = p0.copy(), np.zeros(3), np.zeros(3)
    inside = p0.copy()  # the variant with eps inside the sqrt, to show the test can tell them apart
    for t, g in enumerate(grads, start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        expected -= (lr / bc1) * m / (np.sqrt(v) / math.sqrt(bc2) + eps)
        inside -= lr * (m / bc1) / np.sqrt(v / bc2 + eps)
    p, opt_state = adam_updates(make_adam(M), p0, grads)
    # optax's float32 bias correction (see test_optax_bias_correction_is_float32) costs up to ~1.3e-5.
    np.testing.assert_allclose(p, expected, rtol=2e-5, atol=0)
    assert abs(inside[2] - expected[2]) > 1e-4
    assert int(opt_state[0].count) == 3
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
    opt = torch.optim.Adam([w], lr=lr, betas=(b1, b2), eps=eps)
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    np.testing.assert_allclose(p, w.detach().numpy(), rtol=2e-5, atol=0)


def test_optax_bias_correction_is_float32():
    """The one measured difference between optax.adam and torch.optim.Adam: optax computes 1 - b2**t in
    float32, so its first step is 3e-6 to 2e-5 (relative) smaller than the exact one (torch: exact).
    If this fails, optax changed; update the module docstring of backends/jax/programs.py."""
    p0, g = np.zeros(3), [np.array([1.0, 1e-3, -1e-6])]
    exact = -M.learning_rate * np.sign(g[0]) * np.abs(g[0]) / (np.abs(g[0]) + M.adam_eps)  # step 1 in closed form
    ours = adam_updates(make_adam(M), p0, g)[0]
    assert 3e-6 < np.min(np.abs(ours / exact - 1)) and np.max(np.abs(ours / exact - 1)) < 2e-5


def test_evaluate_and_decode_match_the_reference(data):
    b = make(data)
    ev = b.evaluate(noise(0, N_TEST))
    params, test_x = init_params(1), data[1]
    assert list(ev) == ["test_loss", "test_loss_sampled"] and all(isinstance(v, float) for v in ev.values())
    assert ev["test_loss"] == pytest.approx(mlp_oracle.loss(params, test_x, None) / N_TEST, rel=1e-5)
    assert ev["test_loss_sampled"] == pytest.approx(mlp_oracle.loss(params, test_x, noise(0, N_TEST).eps) / N_TEST, rel=1e-5)
    z = np.random.default_rng(11).standard_normal((5, M.latent_dim))
    means = b.decode(z)
    h3 = np.maximum(z @ params["fc3.weight"].T + params["fc3.bias"], 0)
    assert means.shape == (5, M.input_dim) and means.dtype == np.float32
    np.testing.assert_allclose(means, mlp_oracle.sigmoid(h3 @ params["fc4.weight"].T + params["fc4.bias"]), atol=1e-6)


def test_float32_everywhere(data):
    b = make(data)
    b.train_epoch(epoch_permutation(1, 1, N_TRAIN), noise(1))
    assert not jax.config.jax_enable_x64
    assert str(jax.config.jax_default_matmul_precision) == "highest"
    leaves = jax.tree.leaves(b.state)
    assert {x.dtype for x in leaves} == {jnp.dtype("float32"), jnp.dtype("int32")}  # int32: Adam's count
    assert [x.dtype for x in leaves if x.ndim] == [jnp.float32] * sum(1 for x in leaves if x.ndim)
    assert b.train_x.dtype == b.test_x.dtype == jnp.float32
    assert all(v.dtype == np.float32 for k, v in b.get_state().items() if k != "adam.step")
    assert b.device_memory() == {}


def test_devices():
    assert resolve_device("cpu").platform == "cpu"
    for bad in ("tpu", "cuda:x", "gpu"):
        with pytest.raises(HarnessError):
            resolve_device(bad)
    try:
        has_gpu = bool(jax.devices("gpu"))
    except RuntimeError:
        has_gpu = False
    if not has_gpu:
        with pytest.raises(HarnessError, match="GPU"):
            resolve_device("cuda:0")
