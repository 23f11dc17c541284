"""The MLP VAE in Flax NNX, and its parameters to and from the neutral layout.

Same layers and meanings as torch_model.py; Flax kernels are (in, out), so the conversions transpose.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from workloads import flax_layout
from workloads.mlp_vae import LAYERS


class Model(nnx.Module):
    """pytorch/examples' VAE in Flax NNX: encode -> (mu, logvar), decode_logits -> 784 Bernoulli logits."""

    def __init__(self, m, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(m.input_dim, m.hidden_dim, rngs=rngs)
        self.fc21 = nnx.Linear(m.hidden_dim, m.latent_dim, rngs=rngs)
        self.fc22 = nnx.Linear(m.hidden_dim, m.latent_dim, rngs=rngs)
        self.fc3 = nnx.Linear(m.latent_dim, m.hidden_dim, rngs=rngs)
        self.fc4 = nnx.Linear(m.hidden_dim, m.input_dim, rngs=rngs)

    def encode(self, x):
        h1 = jax.nn.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def decode_logits(self, z):
        return self.fc4(jax.nn.relu(self.fc3(z)))


def to_flax(params: dict[str, np.ndarray]) -> dict:
    """Neutral layout -> {'fc1': {'kernel', 'bias'}, ...} (kernels transposed to (in, out))."""
    return flax_layout.to_flax(params)


def from_flax(tree) -> dict[str, np.ndarray]:
    """Flax's nested dict (params, gradients or Adam moments) -> neutral layout, in state_dict order."""
    return flax_layout.from_flax(tree, LAYERS)
