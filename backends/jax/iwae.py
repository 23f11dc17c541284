"""The IWAE bound in JAX, float32, for runs trained by the jax backend.

`python -m backends.jax.iwae JSON` (see backends/iwae_child.py for the JSON and the outputs). The
saved state_dict arrays convert to the run's workload's Flax model (workloads/<name>/flax_model.py,
built from the run's ModelConfig as the jax engine builds it) on the run's device; per batch of B test
images and their K draws eps (B, K, L) from the harness:

    z = mu + sigma * eps;  log w = log p(x|z) + log p(z) - log q(z|x);  bound = logsumexp_k(log w) - log K

with jax.nn.logsumexp (the largest term factored out). One program of one batch shape is compiled
ahead of time (timed apart as compile seconds); the last, smaller batch is padded to that shape, so
nothing recompiles while the timed loop runs.
"""
from __future__ import annotations

import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from backends import iwae_child
from backends.jax import counter_noise
from harness.counter_noise import STREAM_IWAE
from backends.jax.engine import resolve_device
from backends.jax.programs import abstract_model, flax_model
from harness.config import ModelConfig

LOG_2PI = math.log(2.0 * math.pi)


def log_weights(model: nnx.Module, x: jax.Array, eps: jax.Array) -> jax.Array:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x), shape (B, K), for x (B, D) and eps (B, K, L)."""
    b, k, latent = eps.shape
    mu, logvar = model.encode(x)
    z = mu[:, None, :] + jnp.exp(0.5 * logvar)[:, None, :] * eps
    logits = model.decode_logits(z.reshape(b * k, latent)).reshape(b, k, -1)  # (B, K, D)
    log_px = jnp.einsum("bkd,bd->bk", logits, x) - jnp.sum(jax.nn.softplus(logits), axis=-1)
    log_pz = -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * latent * LOG_2PI
    log_qz = -0.5 * jnp.sum(eps**2, axis=-1) - 0.5 * jnp.sum(logvar, axis=-1, keepdims=True) - 0.5 * latent * LOG_2PI
    return log_px + log_pz - log_qz


def device_draws(d: iwae_child.CounterDraws, device: jax.Device) -> jax.Array:
    """The counter-based draws of d's images, generated on `device` (within 1 ulp of the host reference)."""
    rows = counter_noise.normals(d.seed, d.k, STREAM_IWAE, d.start * d.k, (d.stop - d.start) * d.k, d.latent, device)
    return rows.reshape(d.stop - d.start, d.k, d.latent)


def make(params: dict[str, np.ndarray], device_name: str, k: int, batch: int, m: ModelConfig):
    """The evaluator for iwae_child: params on the device and one program compiled for (batch, k)."""
    device = resolve_device(device_name)
    graphdef = nnx.split(abstract_model(m))[0]
    p = jax.tree.map(lambda a: jax.device_put(a, device), flax_model(m).to_flax(params))

    def batch_bounds(p: dict, x: jax.Array, eps: jax.Array) -> jax.Array:
        """Per-image log-mean-exp of the K importance weights, shape (B,)."""
        return jax.nn.logsumexp(log_weights(nnx.merge(graphdef, p), x, eps), axis=1) - math.log(eps.shape[1])

    sharding = jax.sharding.SingleDeviceSharding(device)
    t = time.perf_counter()
    program = jax.jit(batch_bounds).lower(
        p, jax.ShapeDtypeStruct((batch, m.input_dim), jnp.float32, sharding=sharding),
        jax.ShapeDtypeStruct((batch, k, m.latent_dim), jnp.float32, sharding=sharding)).compile()
    compile_seconds = time.perf_counter() - t

    def bounds(x: np.ndarray, eps) -> np.ndarray:
        n = len(x)
        e = device_draws(eps, device) if isinstance(eps, iwae_child.CounterDraws) else jax.device_put(eps, device)
        if n < batch:  # zero images and zero noise fill the fixed shape; their bounds are dropped
            x = np.concatenate([x, np.zeros((batch - n, x.shape[1]), np.float32)])
            e = jnp.concatenate([e, jnp.zeros((batch - n, *e.shape[1:]), jnp.float32, device=device)])
        out = program(p, jax.device_put(x, device), e)
        return np.asarray(jax.device_get(out))[:n]

    return bounds, compile_seconds, str(device), f"jax {jax.__version__}"


if __name__ == "__main__":
    sys.exit(iwae_child.main(sys.argv[1:], make))
