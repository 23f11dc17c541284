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
from harness.draws import check_k, iwae_counter_noise, iwae_noise  # check_k: K is part of the noise's key

LOG_2PI = math.log(2.0 * math.pi)
ROWS_PER_CHUNK = 8192  # (image, draw) rows the oracle decodes at once: 8192 x 784 float64 = 51 MB
# A convolutional decoder holds (rows, channels, 28, 28) maps and their windows: far fewer rows at once.
CONV_ROWS_PER_CHUNK = 256


def log_mean_exp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(mean(exp(a))) along `axis` without overflow: the largest term is factored out first."""
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)  # all -inf stays -inf instead of becoming nan
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer when every weight is 0
        total = np.log(np.mean(np.exp(a - top), axis=axis))
    return total + np.squeeze(top, axis=axis)


def log_weights(params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray, model: ModelConfig) -> np.ndarray:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) in float64, shape (B, K), for x (B, D) and eps (B, K, L).

    The encoder and decoder are the workload's oracle (`encode`, `decode_logits`), so any workload with
    an oracle is evaluated. log q uses eps directly: (z - mu) / sigma = eps exactly, which avoids
    dividing by a tiny sigma. The Bernoulli log-likelihood sum(x*l - softplus(l)) is minus the BCE of
    the training loss.
    """
    oracle = model.oracle()
    x, eps = np.asarray(x, dtype=np.float64), np.asarray(eps, dtype=np.float64)
    b, k, latent = eps.shape
    mu, logvar = oracle.encode(params, x)
    z = mu[:, None, :] + np.exp(0.5 * logvar)[:, None, :] * eps
    logits = oracle.decode_logits(params, z.reshape(b * k, latent)).reshape(b, k, -1)
    log_px = np.sum(x[:, None, :] * logits - np.logaddexp(0.0, logits), axis=-1)
    log_pz = -0.5 * np.sum(z**2, axis=-1) - 0.5 * latent * LOG_2PI
    log_qz = -0.5 * np.sum(eps**2, axis=-1) - 0.5 * np.sum(logvar, axis=-1)[:, None] - 0.5 * latent * LOG_2PI
    return log_px + log_pz - log_qz


def estimate(params: dict[str, np.ndarray], x: np.ndarray, k: int, seed: int, model: ModelConfig,
             start: int = 0, noise: str = "harness") -> np.ndarray:
    """The per-image IWAE bound log (1/K) sum_k w_k (nats, float64) for test images start.. of x, of the
    model `model` (the run's config: workload and sizes) with weights `params`.

    x holds those images in order; the noise is `iwae_noise(seed, k, ...)` (noise "counter":
    `iwae_counter_noise`), exactly what the framework evaluators use. Decoded a few thousand (image, draw) rows at a time to bound memory.
    """
    k = check_k(k)
    rows = CONV_ROWS_PER_CHUNK if model.spec().convolutional else ROWS_PER_CHUNK
    per_chunk = max(1, rows // k)
    out = []
    for lo in range(0, len(x), per_chunk):
        hi = min(lo + per_chunk, len(x))
        draw = iwae_counter_noise if noise == "counter" else iwae_noise
        eps = draw(seed, k, start + lo, start + hi, model.latent_dim)
        out.append(log_mean_exp(log_weights(params, x[lo:hi], eps, model), axis=1))
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
