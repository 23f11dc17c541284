"""The convolutional VAE in Flax NNX, and the conversions between its parameters and the neutral layout.

The same network as `torch_model.Model` (see there for the layer list), written the Flax way: NHWC
inside, nnx.Conv / nnx.ConvTranspose / nnx.Linear. For the same neutral weights it computes the same
numbers as the torch model (tests/test_conv_models.py checks this to ~1e-12 in float64, gradients too).
Three places where the frameworks' conventions differ, and how each is bridged:

* Flatten after conv2: torch flattens (C, H, W). The model transposes NHWC -> NCHW before flattening,
  so fc_enc's kernel is just torch's weight transposed, like every Linear (the alternative, permuting
  the kernel rows in the conversion, would make the conversion depend on the image shape).
* fc_dec's output: reshaped (B, 32, 7, 7) as torch's view does, then transposed to NHWC.
* ConvTranspose2d: torch's layer is the adjoint (input gradient) of a Conv2d whose OIHW weight is
  torch's (in, out, kh, kw) tensor. `ConvTranspose` below computes it as exactly that, from the conv's
  HWIO kernel (kh, kw, out, in), so the conversion is the plain (2, 3, 1, 0) transpose used for Conv2d.
  nnx.ConvTranspose(transpose_kernel=True, padding (1, 2) / (1, 1)) is the same function and, forward,
  the same program, but its gradient takes a much slower XLA:CPU path (see `conv_transpose`;
  measured by benchmarks/flax_conv_transpose.py in reports/flax-conv-transpose-cpu).
  (Flax's 'SAME' padding is NOT torch's: for k=3, s=2 it pads (2, 1), the right shape shifted by one
  pixel.)
"""
from __future__ import annotations

import functools
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



DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _strided_conv(u, kernel, stride: int):
    """The convolution a transposed convolution is the adjoint of: 3x3, `stride`, padding 1."""
    return jax.lax.conv_general_dilated(u, kernel, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_transpose(x, kernel, stride: int, out_side: int):
    """torch's ConvTranspose2d(k=3, stride, padding=1, output_padding=out_side - ((side-1)*stride - 1)).

    Defined as what it is, the input gradient of `_strided_conv` from an (out_side x out_side) image,
    with both of its own gradients written as that conv's forward and weight gradient. Same function
    and, forward, the same program as nnx.ConvTranspose(transpose_kernel=True); but differentiating
    nnx.ConvTranspose makes XLA:CPU convolve with a dilated window, a much slower path than
    these two (which are the gradients every strided conv layer's training already uses).
    """
    u = jnp.zeros((x.shape[0], out_side, out_side, kernel.shape[2]), x.dtype)
    return jax.vjp(lambda v: _strided_conv(v, kernel, stride), u)[1](x)[0]


def _conv_transpose_fwd(x, kernel, stride, out_side):
    return conv_transpose(x, kernel, stride, out_side), (x, kernel)


def _conv_transpose_bwd(stride, out_side, saved, g):
    x, kernel = saved
    d_x = _strided_conv(g, kernel, stride)
    d_kernel = jax.vjp(lambda k: _strided_conv(g, k, stride), kernel)[1](x)[0]
    return d_x, d_kernel


conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


class ConvTranspose(nnx.Module):
    """torch.nn.ConvTranspose2d(cin, cout, 3, stride, padding=1, output_padding) to an out_side image.

    kernel: (3, 3, cout, cin), the HWIO kernel of the adjoint conv, i.e. torch's (cin, cout, 3, 3)
    weight transposed (2, 3, 1, 0), as for nnx.ConvTranspose(transpose_kernel=True).
    """

    def __init__(self, cin: int, cout: int, stride: int, out_side: int):
        self.kernel = nnx.Param(jnp.zeros((3, 3, cout, cin), jnp.float32))  # values come from the harness
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
        self.stride, self.out_side = stride, out_side

    def __call__(self, x):
        return conv_transpose(x, self.kernel[...], self.stride, self.out_side) + self.bias[...]


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
        self.deconv1 = ConvTranspose(32, 64, stride=2, out_side=14)
        self.deconv2 = ConvTranspose(64, 32, stride=2, out_side=28)
        self.deconv3 = ConvTranspose(32, 1, stride=1, out_side=28)

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


def to_flax(params: dict[str, np.ndarray]) -> dict:
    """Neutral layout -> {'conv1': {'kernel', 'bias'}, ...}: the shared conversion (workloads/flax_layout.py),
    whose 4-D permutation (2, 3, 1, 0) serves Conv2d and, with transpose_kernel=True, ConvTranspose2d."""
    return flax_layout.to_flax(params)


def from_flax(tree) -> dict[str, np.ndarray]:
    """Flax's nested dict or nnx.State (params, gradients or Adam moments) -> neutral layout, state_dict order."""
    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    return flax_layout.from_flax(tree, LAYERS)
