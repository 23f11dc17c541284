"""The float64 NumPy oracle of the MLP VAE: forward pass, hand-written backward pass and decoder.

A small, readable re-implementation of pytorch/examples vae/main.py's model and loss, the judge of
correctness in lockstep parity (harness/verification/parity.py) and the decoder of the report figures.
Weights are stored (out, in) like torch.nn.Linear, so a layer is y = x @ W.T + b. The loss, and hence
every gradient, is the SUM over the batch, because that is what pytorch/examples backpropagates.
Nothing here imports torch or jax.
"""
from __future__ import annotations

import numpy as np

from workloads.bernoulli_vae import as_float64, bce_sum, d_kl, kl_divergence, sigmoid
from workloads.mlp_vae import LAYERS



def _linear(params: dict[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    return x @ params[f"{name}.weight"].T + params[f"{name}.bias"]


def forward(params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray | None) -> dict:
    """The VAE forward pass on one batch x of shape (B, input_dim), values in [0, 1].

    eps is the reparameterisation noise, shape (B, latent_dim); None means z = mu (the eval-mode test
    loss). Returns every intermediate the backward pass needs plus 'loss' = 'bce' + 'kld', batch sums.
    """
    p = as_float64(params)
    x = np.asarray(x, dtype=np.float64)
    a1 = _linear(p, "fc1", x)
    h1 = np.maximum(a1, 0.0)
    mu = _linear(p, "fc21", h1)
    logvar = _linear(p, "fc22", h1)
    std = np.exp(0.5 * logvar)
    z = mu if eps is None else mu + np.asarray(eps, dtype=np.float64) * std
    a3 = _linear(p, "fc3", z)
    h3 = np.maximum(a3, 0.0)
    logits = _linear(p, "fc4", h3)
    bce = bce_sum(logits, x)
    kld = kl_divergence(mu, logvar)
    return {
        "x": x, "a1": a1, "h1": h1, "mu": mu, "logvar": logvar, "std": std, "z": z,
        "a3": a3, "h3": h3, "logits": logits, "recon": sigmoid(logits),
        "bce": bce, "kld": kld, "loss": bce + kld,
    }


def loss(params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray | None) -> float:
    """Batch-sum BCE + KLD of one batch (the quantity pytorch/examples backpropagates)."""
    return forward(params, x, eps)["loss"]


def loss_and_grad(
    params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray | None
) -> tuple[float, dict[str, np.ndarray]]:
    """The batch-sum loss and its gradient w.r.t. every parameter, by a hand-written backward pass."""
    p = as_float64(params)
    f = forward(p, x, eps)
    grads: dict[str, np.ndarray] = {}

    def linear_back(name: str, d_out: np.ndarray, inp: np.ndarray) -> np.ndarray:
        grads[f"{name}.weight"] = d_out.T @ inp
        grads[f"{name}.bias"] = d_out.sum(axis=0)
        return d_out @ p[f"{name}.weight"]

    d_logits = f["recon"] - f["x"]  # d/dl [softplus(l) - x*l]
    d_h3 = linear_back("fc4", d_logits, f["h3"])
    d_a3 = d_h3 * (f["a3"] > 0)  # ReLU'(0) = 0, as in torch
    d_z = linear_back("fc3", d_a3, f["z"])
    kl_mu, kl_logvar = d_kl(f["mu"], f["logvar"])
    d_mu = d_z + kl_mu
    d_logvar = kl_logvar
    if eps is not None:  # z = mu + eps*exp(lv/2) also depends on lv
        d_logvar = d_logvar + d_z * np.asarray(eps, dtype=np.float64) * 0.5 * f["std"]
    d_h1 = linear_back("fc21", d_mu, f["h1"]) + linear_back("fc22", d_logvar, f["h1"])
    d_a1 = d_h1 * (f["a1"] > 0)
    linear_back("fc1", d_a1, f["x"])
    return f["loss"], {f"{layer}.{kind}": grads[f"{layer}.{kind}"] for layer in LAYERS for kind in ("weight", "bias")}


def encode(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar), each (B, latent) float64, of images x (B, 784): the forward pass's own."""
    f = forward(params, x, None)
    return f["mu"], f["logvar"]


def decode_logits(params: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """Bernoulli logits fc4(relu(fc3(z))), (n, 784) float64, of latent codes z (n, latent)."""
    p = as_float64(params)
    return _linear(p, "fc4", np.maximum(_linear(p, "fc3", np.asarray(z, np.float64)), 0.0))


def decode(params: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """Bernoulli means sigmoid(fc4(relu(fc3(z)))) for latent codes z, in float64 (the report's figures)."""
    p = as_float64(params)
    h = np.maximum(np.asarray(z, np.float64) @ p["fc3.weight"].T + p["fc3.bias"], 0.0)
    return sigmoid(h @ p["fc4.weight"].T + p["fc4.bias"])
