"""The convolutional VAE as a torch.nn.Module: its state_dict is the workload's neutral layout.

The architecture is the TensorFlow tutorial "Convolutional Variational Autoencoder", adapted to the
harness's contract (input a flat (B, 784) batch, logits out, eps an input):

    encoder  (B,1,28,28) -conv1 3x3/2 +ReLU-> (B,32,13,13) -conv2 3x3/2 +ReLU-> (B,64,6,6)
             -flatten (C,H,W)-> (B,2304) -fc_enc-> (B, 2*latent) = [mu | logvar]
    decoder  z -fc_dec +ReLU-> (B,1568) -view-> (B,32,7,7) -deconv1 3x3/2 +ReLU-> (B,64,14,14)
             -deconv2 3x3/2 +ReLU-> (B,32,28,28) -deconv3 3x3/1-> (B,1,28,28) logits -> (B,784)

Parameter names and shapes (state_dict order): conv1 (32,1,3,3), conv2 (64,32,3,3), fc_enc
(2*latent, 2304), fc_dec (1568, latent), deconv1 (32,64,3,3), deconv2 (64,32,3,3), deconv3 (32,1,3,3),
each followed by its bias. ConvTranspose2d weights are (in, out, kh, kw), as torch stores them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from harness.config import ModelConfig

SIDE = 28            # MNIST images are 28x28, one channel
ENC_FLAT = 64 * 6 * 6  # conv2's output, flattened in (C, H, W) order
DEC_SHAPE = (32, 7, 7)  # fc_dec's output as an image, (C, H, W)


class Model(nn.Module):
    """Conv encoder / transposed-conv decoder VAE; eps is an input so the harness controls the noise."""

    def __init__(self, m: ModelConfig):
        super().__init__()
        if m.input_dim != SIDE * SIDE:
            raise ValueError(f"the conv VAE needs 28x28 images (input_dim 784), got input_dim {m.input_dim}")
        self.latent_dim = m.latent_dim
        # padding=0: 28 -> 13 -> 6 ("valid"), as in the tutorial's encoder.
        self.conv1 = nn.Conv2d(1, 32, 3, stride=2)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2)
        # One layer gives mu and logvar together (the tutorial's Dense(latent + latent)).
        self.fc_enc = nn.Linear(ENC_FLAT, 2 * m.latent_dim)
        self.fc_dec = nn.Linear(m.latent_dim, 32 * 7 * 7)
        # padding=1, output_padding=1 doubles the side exactly (7 -> 14 -> 28), like Keras' "same".
        self.deconv1 = nn.ConvTranspose2d(32, 64, 3, stride=2, padding=1, output_padding=1)
        self.deconv2 = nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1)
        self.deconv3 = nn.ConvTranspose2d(32, 1, 3, stride=1, padding=1)

    def encode(self, x):
        """(B, 784) pixels in [0, 1] -> (mu, logvar), each (B, latent)."""
        h = x.view(-1, 1, SIDE, SIDE)
        h = F.relu(self.conv1(h))
        h = F.relu(self.conv2(h))
        out = self.fc_enc(h.flatten(1))
        return out[:, :self.latent_dim], out[:, self.latent_dim:]

    def decode_logits(self, z):
        """(B, latent) -> (B, 784) Bernoulli logits."""
        h = F.relu(self.fc_dec(z)).view(-1, *DEC_SHAPE)
        h = F.relu(self.deconv1(h))
        h = F.relu(self.deconv2(h))
        return self.deconv3(h).flatten(1)

    def forward(self, x, eps):
        """Bernoulli logits, mu, logvar; eps=None means z = mu (the posterior mean)."""
        mu, logvar = self.encode(x)
        z = mu if eps is None else mu + eps * torch.exp(0.5 * logvar)
        return self.decode_logits(z), mu, logvar
