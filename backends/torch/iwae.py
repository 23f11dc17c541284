"""The IWAE bound in PyTorch, float32, for runs trained by torch, torch-compile and torch-reference.

`python -m backends.torch.iwae JSON` (see backends/iwae_child.py for the JSON and the outputs). The
saved params load into the run's workload's torch model (workloads/<name>/torch_model.py, built from the
run's ModelConfig) on the run's device;
per batch of B test images and their K draws eps (B, K, L) from the harness:

    z = mu + sigma * eps;  log w = log p(x|z) + log p(z) - log q(z|x);  bound = logsumexp_k(log w) - log K

with torch.logsumexp (the largest term factored out, so float32 neither overflows nor underflows).
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from backends import iwae_child
from backends.torch import counter_noise
from harness.counter_noise import STREAM_IWAE
from backends.torch.common import build_model, resolve_device
from harness.config import ModelConfig

LOG_2PI = math.log(2.0 * math.pi)


def log_weights(model: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x), shape (B, K), for x (B, D) and eps (B, K, L)."""
    b, k, latent = eps.shape
    mu, logvar = model.encode(x)
    z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps
    # decode_logits takes (rows, latent): (B, K, D) is the memory the batch size bounds
    logits = model.decode_logits(z.reshape(b * k, latent)).reshape(b, k, -1)
    # sum_d x_d * l_kd as one batched product, so no second (B, K, D) temporary is made for it
    log_px = torch.bmm(logits, x.unsqueeze(2)).squeeze(2) - F.softplus(logits).sum(-1)
    log_pz = -0.5 * z.pow(2).sum(-1) - 0.5 * latent * LOG_2PI
    log_qz = -0.5 * eps.pow(2).sum(-1) - 0.5 * logvar.sum(-1, keepdim=True) - 0.5 * latent * LOG_2PI
    return log_px + log_pz - log_qz


def device_draws(d: iwae_child.CounterDraws, device: torch.device) -> torch.Tensor:
    """The counter-based draws of d's images, generated on `device` (bit for bit the host reference)."""
    rows = counter_noise.normals(d.seed, d.k, STREAM_IWAE, d.start * d.k, (d.stop - d.start) * d.k, d.latent, device)
    return rows.reshape(d.stop - d.start, d.k, d.latent)


def make(params: dict[str, np.ndarray], device_name: str, k: int, batch: int, m: ModelConfig):
    """The evaluator for iwae_child: a closure over the loaded model on `device_name`."""
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the parent pinned us; torch defaults to all cores
    device = resolve_device(device_name)
    model = build_model(m).to(device)
    model.load_state_dict({name: torch.from_numpy(a) for name, a in params.items()})
    model.eval()
    log_k = math.log(k)

    @torch.inference_mode()
    def bounds(x: np.ndarray, eps) -> np.ndarray:
        xt = torch.from_numpy(x).to(device)
        et = device_draws(eps, device) if isinstance(eps, iwae_child.CounterDraws) else torch.from_numpy(eps).to(device)
        return (torch.logsumexp(log_weights(model, xt, et), dim=1) - log_k).cpu().numpy()

    return bounds, 0.0, str(device), f"torch {torch.__version__}"


if __name__ == "__main__":
    sys.exit(iwae_child.main(sys.argv[1:], make))
