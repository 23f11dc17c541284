"""The jax engine's jitted functions: the workload's Flax NNX model trained with Optax, once per config.

Why Flax NNX: it is the API the Flax docs recommend ("new users are encouraged to use Flax NNX";
Linen is kept for existing code). The model is an `nnx.Module`; for speed the training code uses NNX's
functional API: `nnx.split` once into a static graphdef and the parameters, and `nnx.merge` inside the
jitted functions (free at run time: it happens while tracing). Parameters live as a plain nested dict
{'fc1': {'kernel', 'bias'}, ...} because Flax 0.12 is replacing `nnx.State` with built-in dicts and
`nnx.merge` accepts them; a dict of arrays is also what Optax and donation want.

The epoch is ONE program: `lax.scan` over the full batches, then the final partial batch (60000 =
468 * 128 + 96, kept like every backend) as one more step. Parameters and Adam state are donated, so
XLA updates them in place; the loss is summed on the device and crosses to the host once per epoch.
(The per-batch alternative, `batch_step`, is the engine option `epoch=loop`: backends/jax/engine.py.)

Numerics match backends/torch/eager.py: float32 everywhere, BCE from logits in the softplus form, and
torch.optim.Adam's update (bias correction, eps outside the square root) as plain `optax.adam`
(`make_adam`). Checked, not assumed (tests/test_jax_backend.py): it is torch.optim.Adam's formula, but
it computes the bias correction 1 - b2**t in float32 from b2 rounded to float32 (0.999 ->
0.99900001287), so each update is slightly smaller than torch's, by a relative amount that follows
from that rounding (bounded by test_optax_bias_correction_is_float32). That is far inside the lockstep
tolerance, so the framework's own optimiser is kept rather than a patched one. Weights come from the
harness: Flax's initialisers never run, the module is built abstractly with `nnx.eval_shape`
(`abstract_model`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from backends.jax import counter_noise
from harness.config import ModelConfig
from harness.counter_noise import STREAM_REPARAM


def loss_sum(logits, x, mu, logvar):
    """Batch sum of BCE + analytic KL. softplus(l) - x*l is BCE(sigmoid(l), x) without log(0)."""
    bce = jnp.sum(jax.nn.softplus(logits) - x * logits)
    kld = -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar))
    return bce + kld


def make_adam(m: ModelConfig) -> optax.GradientTransformation:
    """Plain optax.adam, as a JAX user writes it (see the module docstring for how it differs from torch)."""
    return optax.adam(m.learning_rate, b1=m.beta1, b2=m.beta2, eps=m.adam_eps)


def flax_model(m: ModelConfig):
    """The workload's Flax module file (workloads/<name>/flax_model.py): Model, to_flax, from_flax."""
    return m.spec().module("flax_model")


def abstract_model(m: ModelConfig) -> nnx.Module:
    """The module's structure without running Flax's initialisers (the harness supplies the weights)."""
    return nnx.eval_shape(lambda: flax_model(m).Model(m, nnx.Rngs(0)))


@dataclass(frozen=True)
class Functions:
    """The un-jitted functions of one model config, optimiser and precision: `programs` jits them for one
    seed, backends/jax/ensemble_programs.py vmaps them over the members, so both run the same math."""

    step: Callable           # (state, x, eps) -> (state, batch-sum loss)
    evaluate: Callable       # (params, test_x, eps) -> (loss sum at z = mu, loss sum at sampled z)
    noise: Callable          # (seed, n) -> jax's own eps, (n, latent), for `--noise framework`
    counter_noise: Callable  # (seed, epoch, start, n) -> rows start.. of the harness counter noise (`--noise counter`)
    decode: Callable         # (params, z) -> sigmoid means


@dataclass(frozen=True)
class Programs:
    """The jitted functions of one model config and optimiser. Built once per process (cached), so every
    backend instance shares jax's trace and compilation caches."""

    epoch: Callable      # (state, train_x, perm, eps) -> (state, loss sum); state donated
    evaluate: Callable   # (params, test_x, eps) -> (loss sum at z = mu, loss sum at sampled z)
    step: Callable       # (state, x, eps) -> (state, loss); state donated (lockstep mode)
    batch_step: Callable  # (state, total, train_x, perm, eps, start, size) -> (state, total); the epoch=loop arrangement
    noise: Callable      # (seed, n) -> jax's own eps, (n, latent), for `--noise framework`
    counter_noise: Callable  # (seed, epoch, n) -> the harness counter noise of (seed, epoch), (n, latent)
    decode: Callable     # (params, z) -> sigmoid means


@functools.cache
def functions(m: ModelConfig, make_optimizer: Callable[[ModelConfig], optax.GradientTransformation],
              precision: str = "float32") -> Functions:
    """The functions for `m`, training with `make_optimizer(m)` (the engine passes `make_adam`;
    the optimiser is an argument so that benchmarks/profile_backends.py can swap it for SGD).

    precision "bf16": the model runs on bfloat16 copies of the params and inputs (so its matrix
    products and convolutions are bfloat16), the loss in float32; the params, their gradients and
    Adam's state stay float32 -- the recipe torch's autocast gives the torch engines.
    """
    graphdef = nnx.split(abstract_model(m))[0]
    compute = jnp.bfloat16 if precision == "bf16" else jnp.float32

    def encoded(params, x, eps):
        """The model (on `compute` copies of the params; nnx.merge costs nothing at run time, it happens
        while tracing), mu, logvar and the sampled z = mu + eps * std, all in `compute`."""
        model = nnx.merge(graphdef, jax.tree.map(lambda p: p.astype(compute), params))  # no-op for float32
        mu, logvar = model.encode(x.astype(compute))
        return model, mu, logvar, (mu + eps * jnp.exp(0.5 * logvar)).astype(compute)

    def loss32(logits, x, mu, logvar):
        f32 = jnp.float32
        return loss_sum(logits.astype(f32), x, mu.astype(f32), logvar.astype(f32))
    tx = make_optimizer(m)
    latent = m.latent_dim

    def noise(seed, n):
        # `--noise framework`: jax draws normal(key(seed), (n, latent)) itself, in permutation-position order.
        return jax.random.normal(jax.random.key(seed), (n, latent), jnp.float32)

    def counter(seed, epoch, start, n):
        return counter_noise.normals(seed, epoch, STREAM_REPARAM, start, n, latent)

    def loss_fn(params, x, eps):
        model, mu, logvar, z = encoded(params, x, eps)
        return loss32(model.decode_logits(z), x, mu, logvar)

    def step(state, x, eps):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, x, eps)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def evaluate(params, test_x, eps):
        model, mu, logvar, z = encoded(params, test_x, eps)  # encoder once, decoder twice
        return loss32(model.decode_logits(mu), test_x, mu, logvar), loss32(model.decode_logits(z), test_x, mu, logvar)

    def decode(params, z):
        return jax.nn.sigmoid(nnx.merge(graphdef, params).decode_logits(z))

    return Functions(step, evaluate, noise, counter, decode)


@functools.cache
def programs(m: ModelConfig, make_optimizer: Callable[[ModelConfig], optax.GradientTransformation],
             precision: str = "float32") -> Programs:
    """The jitted single-seed functions for `m` (see `functions` for the arguments)."""
    f = functions(m, make_optimizer, precision)
    step, bs, latent = f.step, m.batch_size, m.latent_dim

    def epoch(state, train_x, perm, eps):
        n = perm.shape[0]
        full = n // bs * bs

        def body(state, batch):
            idx, e = batch
            return step(state, jnp.take(train_x, idx, axis=0), e)

        state, losses = jax.lax.scan(
            body, state, (perm[:full].reshape(-1, bs), eps[:full].reshape(-1, bs, latent)))
        total = jnp.sum(losses)
        if n > full:  # the kept partial batch has a static shape: one more step in the same program
            state, loss = step(state, jnp.take(train_x, perm[full:], axis=0), eps[full:])
            total = total + loss
        return state, total

    def batch_step(state, total, train_x, perm, eps, start, size):
        idx = jax.lax.dynamic_slice_in_dim(perm, start, size)
        state, loss = step(state, jnp.take(train_x, idx, axis=0), jax.lax.dynamic_slice_in_dim(eps, start, size))
        return state, total + loss

    return Programs(
        epoch=jax.jit(epoch, donate_argnums=0),
        evaluate=jax.jit(f.evaluate),
        step=jax.jit(step, donate_argnums=0),
        batch_step=jax.jit(batch_step, donate_argnums=(0, 1), static_argnums=6),
        noise=jax.jit(f.noise, static_argnums=1),
        counter_noise=jax.jit(lambda seed, epoch, n: f.counter_noise(seed, epoch, 0, n), static_argnums=2),
        decode=jax.jit(f.decode),
    )
