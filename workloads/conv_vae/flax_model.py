"""The convolutional VAE in Flax NNX, and the conversions between its parameters and the neutral layout.

The same network as `torch_model.Model` (see there for the layer list), written the Flax way: NHWC
inside, nnx.Conv / nnx.ConvTranspose / nnx.Linear. For the same neutral weights it computes the same
numbers as the torch model (tests/test_conv_models.py checks this to ~1e-12 in float64, gradients too).
Three places where the frameworks' conventions differ, and how each is bridged:

* Flatten after conv2: torch flattens (C, H, W). The model transposes NHWC -> NCHW before flattening,
  so fc_enc's kernel is just torch's weight transposed, like every Linear (the alternative, permuting
  the kernel rows in the conversion, would make the conversion depend on the image shape).
* fc_dec's output: reshaped (B, 32, 7, 7) as torch's view does, then transposed to NHWC.
* ConvTranspose2d: torch's layer is the gradient (adjoint) of a Conv2d whose OIHW weight is torch's
  (in, out, kh, kw) tensor. `nnx.ConvTranspose(transpose_kernel=True)` computes exactly that adjoint
  from the same conv's HWIO kernel, shape (kh, kw, out, in): it flips the kernel spatially and swaps
  its channel axes before convolving the stride-dilated input. So the conversion is the plain
  (2, 3, 1, 0) transpose used for Conv2d, with no flip. (transpose_kernel=False with a kernel flipped
  in the conversion gives bitwise the same outputs; without the flip the result is wrong.) Padding:
  torch's padding p and output_padding op pad the dilated input by (k-1-p, k-1-p+op): (1, 2) for the
  stride-2 layers, (1, 1) for deconv3. Flax's 'SAME' is NOT that: for k=3, s=2 it pads (2, 1), the
  right shape but shifted by one pixel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workloads import flax_layout

if TYPE_CHECKING:
    from harness.config import ModelConfig

SIDE = 28
LAYERS = ("conv1", "conv2", "fc_enc", "fc_dec", "deconv1", "deconv2", "deconv3")  # state_dict order



def torch_transpose_padding(kernel: int, padding: int, output_padding: int = 0) -> tuple[int, int]:
    """The (low, high) padding of the dilated input that reproduces torch's ConvTranspose2d(padding, output_padding)."""
    low = kernel - 1 - padding
    return low, low + output_padding


def _deconv(cin: int, cout: int, stride: int, output_padding: int, rngs: nnx.Rngs) -> nnx.ConvTranspose:
    pad = torch_transpose_padding(3, 1, output_padding)
    return nnx.ConvTranspose(cin, cout, (3, 3), strides=(stride, stride), padding=(pad, pad),
                             transpose_kernel=True, rngs=rngs)


class Model(nnx.Module):
    """The conv VAE in Flax NNX (NHWC inside); the noise eps is an input so the harness controls it."""

    def __init__(self, m: ModelConfig, rngs: nnx.Rngs):
        if m.input_dim != SIDE * SIDE:
            raise ValueError(f"the conv VAE needs 28x28 images (input_dim 784), got input_dim {m.input_dim}")
        self.latent_dim = m.latent_dim
        self.conv1 = nnx.Conv(1, 32, (3, 3), strides=(2, 2), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), strides=(2, 2), padding="VALID", rngs=rngs)
        self.fc_enc = nnx.Linear(64 * 6 * 6, 2 * m.latent_dim, rngs=rngs)
        self.fc_dec = nnx.Linear(m.latent_dim, 32 * 7 * 7, rngs=rngs)
        self.deconv1 = _deconv(32, 64, 2, 1, rngs)
        self.deconv2 = _deconv(64, 32, 2, 1, rngs)
        self.deconv3 = _deconv(32, 1, 1, 0, rngs)

    def encode(self, x):
        """(B, 784) pixels in [0, 1] -> (mu, logvar), each (B, latent)."""
        h = x.reshape(-1, SIDE, SIDE, 1)
        h = jax.nn.relu(self.conv1(h))
        h = jax.nn.relu(self.conv2(h))
        # Flatten in torch's (C, H, W) order so fc_enc's kernel is the neutral weight transposed.
        h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)
        out = self.fc_enc(h)
        return out[:, :self.latent_dim], out[:, self.latent_dim:]

    def decode_logits(self, z):
        """(B, latent) -> (B, 784) Bernoulli logits."""
        h = jax.nn.relu(self.fc_dec(z)).reshape(-1, 32, 7, 7)  # torch's view order (C, H, W) ...
        h = jnp.transpose(h, (0, 2, 3, 1))                        # ... then channels last
        h = jax.nn.relu(self.deconv1(h))
        h = jax.nn.relu(self.deconv2(h))
        # One channel: NHWC and NCHW flatten alike.
        return self.deconv3(h).reshape(h.shape[0], -1)

    def __call__(self, x, eps):
        """Bernoulli logits, mu, logvar; eps=None means z = mu (the posterior mean), as torch's forward."""
        mu, logvar = self.encode(x)
        z = mu if eps is None else mu + eps * jnp.exp(0.5 * logvar)
        return self.decode_logits(z), mu, logvar


def abstract_model(m: ModelConfig) -> Model:
    """The module's structure without running Flax's initialisers (the harness supplies the weights)."""
    return nnx.eval_shape(lambda: Model(m, nnx.Rngs(0)))


def to_flax(params: dict[str, np.ndarray]) -> dict:
    """Neutral layout -> {'conv1': {'kernel', 'bias'}, ...}: the shared conversion (workloads/flax_layout.py),
    whose 4-D permutation (2, 3, 1, 0) serves Conv2d and, with transpose_kernel=True, ConvTranspose2d."""
    return flax_layout.to_flax(params)


def from_flax(tree) -> dict[str, np.ndarray]:
    """Flax's nested dict or nnx.State (params, gradients or Adam moments) -> neutral layout, state_dict order."""
    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    return flax_layout.from_flax(tree, LAYERS)
