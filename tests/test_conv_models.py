"""The conv VAE's torch and Flax models: layout, conversions, and equal numbers across frameworks.

Random neutral weights (scaled normal, random biases) go into the torch model and, through
`flax_model.to_flax`, into the Flax model; outputs and every parameter's gradient must agree, in
float64 to rounding (~1e-12) and in float32 to float32 rounding. The float64 NumPy oracle judges torch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from backends.jax.programs import abstract_model
from harness.config import ModelConfig
from workloads.conv_vae import flax_model, oracle, torch_model
from workloads.spec import fan_in

M = ModelConfig(workload="conv-vae")  # abstract_model builds the Flax module of M's workload
B = 4
# The state_dict the workload promises (latent 20), in order.
EXPECTED = [
    ("conv1.weight", (32, 1, 3, 3)), ("conv1.bias", (32,)),
    ("conv2.weight", (64, 32, 3, 3)), ("conv2.bias", (64,)),
    ("fc_enc.weight", (40, 2304)), ("fc_enc.bias", (40,)),
    ("fc_dec.weight", (1568, 20)), ("fc_dec.bias", (1568,)),
    ("deconv1.weight", (32, 64, 3, 3)), ("deconv1.bias", (64,)),
    ("deconv2.weight", (64, 32, 3, 3)), ("deconv2.bias", (32,)),
    ("deconv3.weight", (32, 1, 3, 3)), ("deconv3.bias", (1,)),
]


def random_params(seed: int, dtype=np.float64) -> dict[str, np.ndarray]:
    """N(0, 2/fan_in) weights (ReLUs stay about half open) and N(0, 0.1^2) biases, so no term is zero."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in EXPECTED:
        std = np.sqrt(2.0 / fan_in(shape)) if name.endswith("weight") else 0.1
        out[name] = (std * rng.standard_normal(shape)).astype(dtype)
    return out


def batch(seed: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((B, 784)).astype(dtype), rng.standard_normal((B, M.latent_dim)).astype(dtype)


def torch_run(params, x, eps):
    """(logits, mu, logvar, loss) and {name: grad} of the torch model in the params' dtype."""
    model = torch_model.Model(M).to(torch.float64 if params["conv1.bias"].dtype == np.float64 else torch.float32)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    xt = torch.from_numpy(x)
    logits, mu, logvar = model(xt, torch.from_numpy(eps))
    bce = F.binary_cross_entropy_with_logits(logits, xt, reduction="sum")
    loss = bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    loss.backward()
    outs = {k: t.detach().numpy() for k, t in dict(logits=logits, mu=mu, logvar=logvar, loss=loss).items()}
    return outs, {n: p.grad.numpy() for n, p in model.named_parameters()}


def flax_run(params, x, eps):
    """The same through the Flax model: merged from an abstract graphdef, gradients by jax.grad."""
    graphdef = nnx.split(abstract_model(M))[0]
    tree = jax.tree.map(jnp.asarray, flax_model.to_flax(params))

    def loss_fn(tree):
        logits, mu, logvar = nnx.merge(graphdef, tree)(x, eps)
        bce = jnp.sum(jax.nn.softplus(logits) - x * logits)
        loss = bce - 0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar))
        return loss, dict(logits=logits, mu=mu, logvar=logvar, loss=loss)

    grads, outs = jax.jit(jax.grad(loss_fn, has_aux=True))(tree)
    return {k: np.asarray(v) for k, v in outs.items()}, flax_model.from_flax(grads)


def rel_max(a, b) -> float:
    """max |a - b| relative to b's largest entry."""
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def rel_rms(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2) / np.mean(np.asarray(b, np.float64) ** 2)))


@pytest.fixture
def x64():
    """jax float64 for one test only; the rest of the session keeps jax's float32 default."""
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def test_torch_state_dict_names_and_shapes():
    sd = torch_model.Model(M).state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == EXPECTED
    assert [(k, tuple(v)) for k, v in oracle.param_shapes(M).items()] == EXPECTED
    # latent_dim is read, not assumed
    sd8 = torch_model.Model(ModelConfig(latent_dim=8)).state_dict()
    assert tuple(sd8["fc_enc.weight"].shape) == (16, 2304) and tuple(sd8["fc_dec.weight"].shape) == (1568, 8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_flax_inverts_to_flax_bitwise(dtype):
    params = random_params(1, dtype)
    params["conv1.bias"][0] = -0.0  # a sign bit only a bitwise comparison sees
    tree = flax_model.to_flax(params)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(tree))
    back = flax_model.from_flax(tree)
    assert list(back) == [n for n, _ in EXPECTED]
    for name, value in params.items():
        assert back[name].dtype == dtype and back[name].shape == value.shape
        assert back[name].flags.c_contiguous
        assert back[name].tobytes() == value.tobytes(), name
    params["conv1.weight"][...] = 7.0  # the tree holds copies, not views of the caller's arrays
    assert not np.any(tree["conv1"]["kernel"] == 7.0)


def test_abstract_model_merges_the_converted_tree():
    graphdef, state = nnx.split(abstract_model(M))
    params = random_params(2, np.float32)
    tree = jax.tree.map(jnp.asarray, flax_model.to_flax(params))
    # Same structure and shapes as Flax's own parameter tree: nothing renamed, nothing transposed wrongly.
    shapes = jax.tree.map(lambda a: tuple(a.shape), nnx.to_pure_dict(state))
    assert jax.tree.map(lambda a: tuple(a.shape), tree) == shapes
    model = nnx.merge(graphdef, tree)
    x, eps = batch(3, np.float32)
    logits, mu, logvar = model(jnp.asarray(x), jnp.asarray(eps))
    assert logits.shape == (B, 784) and mu.shape == logvar.shape == (B, M.latent_dim)
    # A merged model's State converts back to the same neutral params, bitwise.
    back = flax_model.from_flax(nnx.split(model)[1])
    assert all(back[k].tobytes() == params[k].tobytes() for k in params)


@pytest.mark.usefixtures("x64")
def test_torch_and_flax_agree_float64():
    params = random_params(4)
    x, eps = batch(5)
    t_out, t_grad = torch_run(params, x, eps)
    f_out, f_grad = flax_run(params, x, eps)
    assert f_out["logits"].dtype == np.float64 and f_grad["conv1.weight"].dtype == np.float64
    for k in ("logits", "mu", "logvar", "loss"):
        assert rel_max(f_out[k], t_out[k]) < 1e-12, k
    assert list(f_grad) == list(t_grad)
    for name in t_grad:
        assert rel_max(f_grad[name], t_grad[name]) < 1e-10, name


def test_torch_and_flax_agree_float32():
    params = random_params(6, np.float32)
    x, eps = batch(7, np.float32)
    t_out, t_grad = torch_run(params, x, eps)
    f_out, f_grad = flax_run(params, x, eps)
    assert f_out["logits"].dtype == np.float32
    for k in ("logits", "mu", "logvar"):
        assert rel_rms(f_out[k], t_out[k]) < 1e-5, k
    assert abs(f_out["loss"] - t_out["loss"]) < 1e-5 * abs(t_out["loss"])
    for name in t_grad:
        assert rel_rms(f_grad[name], t_grad[name]) < 1e-5, name


def test_torch_float64_matches_the_oracle():
    params = random_params(8)
    x, eps = batch(9)
    t_out, t_grad = torch_run(params, x, eps)
    ref = oracle.forward(params, x, eps)
    for k in ("logits", "mu", "logvar"):
        assert rel_max(t_out[k], ref[k]) < 1e-12, k
    assert abs(float(t_out["loss"]) - ref["loss"]) < 1e-12 * abs(ref["loss"])
    ref_loss, ref_grad = oracle.loss_and_grad(params, x, eps)
    assert ref_loss == ref["loss"] and list(ref_grad) == list(t_grad)
    for name in t_grad:
        assert rel_max(t_grad[name], ref_grad[name]) < 1e-10, name
    # eps=None is z = mu in both
    with torch.no_grad():
        model = torch_model.Model(M).double()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
        logits = model(torch.from_numpy(x), None)[0].numpy()
    assert rel_max(logits, oracle.forward(params, x, None)["logits"]) < 1e-12
