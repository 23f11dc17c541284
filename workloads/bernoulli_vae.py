"""The objective both VAE workloads share: Bernoulli decoder, BCE(sum) + analytic KL, and its metrics.

pytorch/examples vae/main.py's loss_function, written once in NumPy (float64) for the oracles; the
frameworks' versions live in the engines (backends/torch/common.py, backends/jax/programs.py).
"""
from __future__ import annotations

import numpy as np

from workloads.spec import Metric

METRICS = (
    Metric("test_loss", "negative ELBO per test image with z = mu (the posterior mean): what users compare"),
    Metric("test_loss_sampled", "negative ELBO per test image with one sampled z: the single-sample ELBO"),
)


def as_float64(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The oracles compute in float64 whatever the caller passes (float32 params, gradients, Adam state)."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}


def sigmoid(t: np.ndarray) -> np.ndarray:
    """Logistic function; the tanh form never overflows, unlike 1 / (1 + exp(-t))."""
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def bce_sum(logits: np.ndarray, x: np.ndarray) -> float:
    """BCE(sigmoid(l), x) summed, as softplus(l) - x*l: exact, and no log(0) for saturated pixels."""
    return float(np.sum(np.logaddexp(0.0, logits) - x * logits))


def kl_divergence(mu: np.ndarray, logvar: np.ndarray) -> float:
    """Analytic KL(N(mu, exp(logvar)) || N(0, I)), summed over batch and latent dims (pytorch/examples)."""
    return float(-0.5 * np.sum(1.0 + logvar - mu**2 - np.exp(logvar)))


def d_kl(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of kl_divergence: dKL/dmu = mu, dKL/dlogvar = 0.5 * (exp(logvar) - 1)."""
    return mu, 0.5 * (np.exp(logvar) - 1.0)
