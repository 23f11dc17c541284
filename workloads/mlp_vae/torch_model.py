"""The MLP VAE as a torch.nn.Module: pytorch/examples vae/main.py's layers and attribute names.

The attribute names are the example's, so the state_dict is the neutral layout and saved params load
straight into the example's model. The noise eps is an input, so the harness controls it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Model(nn.Module):
    """pytorch/examples' VAE: encode -> (mu, logvar), decode_logits -> 784 Bernoulli logits."""

    def __init__(self, m):
        super().__init__()
        self.fc1 = nn.Linear(m.input_dim, m.hidden_dim)
        self.fc21 = nn.Linear(m.hidden_dim, m.latent_dim)
        self.fc22 = nn.Linear(m.hidden_dim, m.latent_dim)
        self.fc3 = nn.Linear(m.latent_dim, m.hidden_dim)
        self.fc4 = nn.Linear(m.hidden_dim, m.input_dim)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def decode_logits(self, z):
        return self.fc4(F.relu(self.fc3(z)))

    def forward(self, x, eps):
        """Bernoulli logits, mu, logvar; eps=None means z = mu (the posterior mean)."""
        mu, logvar = self.encode(x)
        z = mu if eps is None else mu + eps * torch.exp(0.5 * logvar)
        return self.decode_logits(z), mu, logvar
