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

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from harness.config import ModelConfig

SIDE = 28
LAYERS = ("conv1", "conv2", "fc_enc", "fc_dec", "deconv1", "deconv2", "deconv3")  # state_dict order

# Neutral weight (torch) axes -> Flax kernel axes, by the weight's rank. Linear (out, in) -> (in, out);
# Conv2d (out, in, kh, kw) -> (kh, kw, in, out); ConvTranspose2d (in, out, kh, kw) -> (kh, kw, out, in),
# the kernel shape of nnx.ConvTranspose(transpose_kernel=True): the same permutation (see above).
_TO_FLAX = {2: (1, 0), 4: (2, 3, 1, 0)}
_FROM_FLAX = {n: tuple(np.argsort(axes)) for n, axes in _TO_FLAX.items()}


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
    """Neutral layout (torch state_dict names/shapes) -> Flax's nested parameter dict.

    The contract every workload's flax_model provides: `{"layer.weight", "layer.bias"}` become
    `{"layer": {"kernel", "bias"}}`, the pure-dict form of `nnx.split(model)[1]`, which
    `nnx.merge(graphdef, tree)` accepts (after jnp.asarray, or as NumPy). Kernels are the weights with
    their axes permuted (Linear: transposed; Conv2d and ConvTranspose2d: see `_TO_FLAX`); values and
    dtype are kept, and every array is a fresh C-contiguous NumPy copy, so later changes to the
    caller's arrays cannot reach the tree.
    """
    tree: dict[str, dict[str, np.ndarray]] = {}
    for name, value in params.items():
        layer, kind = name.rsplit(".", 1)
        value = np.asarray(value)
        if kind == "weight":
            tree.setdefault(layer, {})["kernel"] = np.array(value.transpose(_TO_FLAX[value.ndim]), order="C")
        elif kind == "bias":
            tree.setdefault(layer, {})["bias"] = np.array(value, order="C")
        else:
            raise ValueError(f"unexpected parameter {name!r}: neutral names end in .weight or .bias")
    return tree


def from_flax(tree) -> dict[str, np.ndarray]:
    """Flax's nested parameter dict (or nnx.State, or a gradient tree of the same shape) -> neutral layout.

    The exact inverse of `to_flax` (a bitwise round trip: only axes move), returning C-contiguous NumPy
    arrays in state_dict order (`LAYERS`, weight then bias), dtype kept. Works on parameters, their
    gradients and Adam moments alike, since all share the parameters' tree structure.
    """
    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    out: dict[str, np.ndarray] = {}
    for layer in LAYERS:
        kernel, bias = (np.asarray(_value(tree[layer][k])) for k in ("kernel", "bias"))
        out[f"{layer}.weight"] = np.array(kernel.transpose(_FROM_FLAX[kernel.ndim]), order="C")
        out[f"{layer}.bias"] = np.array(bias, order="C")
    return out


def _value(leaf):
    # A nested dict may still hold nnx.Variable leaves (e.g. built by hand from a State): unwrap them.
    return leaf[...] if isinstance(leaf, nnx.Variable) else leaf
