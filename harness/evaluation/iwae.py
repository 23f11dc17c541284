"""The importance-weighted bound (Burda et al. 2015): its float64 NumPy oracle (the noise: harness/draws.py).

For a test image x and K draws z_k = mu(x) + sigma(x) * eps_k from the encoder's q(z|x),

    log p(x) >= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)

(the IWAE bound; K = 1 is the single-sample ELBO, and the bound tightens as K grows). p(x|z) is the
model's Bernoulli likelihood from the decoder's logits, the same BCE the training loss uses; the
pixels are byte / 255, not binarised, so the numbers compare with `test_loss`, not with the binarised
MNIST log-likelihoods of the literature.

The noise eps comes from the harness (harness/draws.py `iwae_noise`), not from a framework: every
backend, and this oracle, is judged on the same draws. The draws of test image i depend on
(seed, K, i) alone, so any batching or test subset sees the same numbers. Nothing here imports torch
or jax.
"""
from __future__ import annotations

import math

import numpy as np

from harness.config import ModelConfig
from harness.draws import check_k, iwae_noise  # check_k: K is part of the noise's key

PARAM_ORDER = ModelConfig(workload="mlp-vae").param_order()  # the IWAE estimate is written for the MLP

LOG_2PI = math.log(2.0 * math.pi)
ROWS_PER_CHUNK = 8192  # (image, draw) rows the oracle decodes at once: 8192 x 784 float64 = 51 MB


def log_mean_exp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(mean(exp(a))) along `axis` without overflow: the largest term is factored out first."""
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)  # all -inf stays -inf instead of becoming nan
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer when every weight is 0
        total = np.log(np.mean(np.exp(a - top), axis=axis))
    return total + np.squeeze(top, axis=axis)


def _linear(p: dict[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def log_weights(params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) in float64, shape (B, K), for x (B, D) and eps (B, K, L).

    log q uses eps directly: (z - mu) / sigma = eps exactly, which avoids dividing by a tiny sigma.
    The Bernoulli log-likelihood sum(x*l - softplus(l)) is minus the BCE of the training loss.
    """
    p = {k: np.asarray(params[k], dtype=np.float64) for k in PARAM_ORDER}
    x, eps = np.asarray(x, dtype=np.float64), np.asarray(eps, dtype=np.float64)
    h1 = np.maximum(_linear(p, "fc1", x), 0.0)
    mu, logvar = _linear(p, "fc21", h1), _linear(p, "fc22", h1)
    z = mu[:, None, :] + np.exp(0.5 * logvar)[:, None, :] * eps
    logits = _linear(p, "fc4", np.maximum(_linear(p, "fc3", z), 0.0))
    log_px = np.sum(x[:, None, :] * logits - np.logaddexp(0.0, logits), axis=-1)
    latent = eps.shape[-1]
    log_pz = -0.5 * np.sum(z**2, axis=-1) - 0.5 * latent * LOG_2PI
    log_qz = -0.5 * np.sum(eps**2, axis=-1) - 0.5 * np.sum(logvar, axis=-1)[:, None] - 0.5 * latent * LOG_2PI
    return log_px + log_pz - log_qz


def estimate(params: dict[str, np.ndarray], x: np.ndarray, k: int, seed: int, start: int = 0) -> np.ndarray:
    """The per-image IWAE bound log (1/K) sum_k w_k (nats, float64) for test images start.. of x.

    x holds those images in order; the noise is `iwae_noise(seed, k, ...)`, exactly what the framework
    evaluators use. Decoded a few thousand (image, draw) rows at a time to bound memory.
    """
    k = check_k(k)
    latent = np.shape(params["fc21.weight"])[0]
    per_chunk = max(1, ROWS_PER_CHUNK // k)
    out = []
    for lo in range(0, len(x), per_chunk):
        hi = min(lo + per_chunk, len(x))
        eps = iwae_noise(seed, k, start + lo, start + hi, latent)
        out.append(log_mean_exp(log_weights(params, x[lo:hi], eps), axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def nll_and_stderr(bounds: np.ndarray) -> tuple[float, float]:
    """Mean negative bound over test images (the NLL estimate, nats) and its standard error.

    The standard error is over test images (sample sd / sqrt(n)): it says how much the figure would
    move on another test set of this size, which dominates the Monte Carlo error of K draws.
    """
    b = np.asarray(bounds, dtype=np.float64)
    if b.size == 0:
        raise ValueError("no test images evaluated")
    stderr = float(np.std(b, ddof=1) / math.sqrt(b.size)) if b.size > 1 else float("nan")
    return float(-np.mean(b)), stderr
