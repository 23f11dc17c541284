"""The float64 NumPy judge of the convolutional VAE: forward, hand-written backward, decoder, FLOPs.

The model is TensorFlow's "Convolutional Variational Autoencoder" tutorial adapted to PyTorch layers:

    x (B, 784) -> (B, 1, 28, 28)
    conv1   Conv2d(1 -> 32, 3x3, stride 2, pad 0) + ReLU                       -> (B, 32, 13, 13)
    conv2   Conv2d(32 -> 64, 3x3, stride 2, pad 0) + ReLU                      -> (B, 64, 6, 6)
    fc_enc  Linear(2304 -> 2*latent) on the C,H,W flatten; mu, logvar = halves  -> (B, latent) x 2
    z = mu + eps * exp(logvar / 2)                                             (eps None: z = mu)
    fc_dec  Linear(latent -> 1568) + ReLU, viewed as (B, 32, 7, 7)
    deconv1 ConvTranspose2d(32 -> 64, 3x3, stride 2, pad 1, output_pad 1) + ReLU -> (B, 64, 14, 14)
    deconv2 ConvTranspose2d(64 -> 32, 3x3, stride 2, pad 1, output_pad 1) + ReLU -> (B, 32, 28, 28)
    deconv3 ConvTranspose2d(32 -> 1, 3x3, stride 1, pad 1)                     -> logits (B, 784)

Parameters use PyTorch's state_dict layout (Conv2d (out, in, kh, kw), ConvTranspose2d (in, out, kh, kw),
Linear (out, in)); the loss, and so every gradient, is the batch SUM of BCE + analytic KL
(workloads/bernoulli_vae.py, shared with the MLP workload's oracle).

The convolutions and their gradients are workloads/conv_vae/conv_ops.py. Nothing here imports torch or jax.
"""
from __future__ import annotations

import numpy as np
from workloads.bernoulli_vae import as_float64, bce_sum, d_kl, kl_divergence, sigmoid
from workloads.conv_vae.conv_ops import (conv2d, conv2d_input_grad, conv2d_weight_grad, conv_out_side,
                                         conv_transpose2d, deconv_out_side)

IMAGE_SIDE = 28
KERNEL = 3
CONV1_CHANNELS = 32    # conv1 output
CONV2_CHANNELS = 64    # conv2 output
DEC_CHANNELS = 32      # fc_dec output, viewed as (DEC_CHANNELS, DEC_SIDE, DEC_SIDE)
DECONV1_CHANNELS = 64  # deconv1 output
DECONV2_CHANNELS = 32  # deconv2 output
DEC_SIDE = 7


CONV1_SIDE = conv_out_side(IMAGE_SIDE, KERNEL, 2, 0)          # 13
ENC_SIDE = conv_out_side(CONV1_SIDE, KERNEL, 2, 0)            # 6
DECONV1_SIDE = deconv_out_side(DEC_SIDE, KERNEL, 2, 1, 1)     # 14
assert deconv_out_side(DECONV1_SIDE, KERNEL, 2, 1, 1) == deconv_out_side(IMAGE_SIDE, KERNEL, 1, 1) == IMAGE_SIDE


def param_shapes(model) -> dict[str, tuple[int, ...]]:
    """state_dict names and shapes, in state_dict order; only model.latent_dim is read."""
    z, k = model.latent_dim, KERNEL
    layers = {
        "conv1": (CONV1_CHANNELS, 1, k, k),
        "conv2": (CONV2_CHANNELS, CONV1_CHANNELS, k, k),
        "fc_enc": (2 * z, CONV2_CHANNELS * ENC_SIDE**2),
        "fc_dec": (DEC_CHANNELS * DEC_SIDE**2, z),
        "deconv1": (DEC_CHANNELS, DECONV1_CHANNELS, k, k),    # transposed: (in, out, kh, kw)
        "deconv2": (DECONV1_CHANNELS, DECONV2_CHANNELS, k, k),
        "deconv3": (DECONV2_CHANNELS, 1, k, k),
    }
    out: dict[str, tuple[int, ...]] = {}
    for name, w in layers.items():
        out[f"{name}.weight"] = w
        # A Linear's or Conv2d's bias has dim 0 entries, a ConvTranspose2d's dim 1 (its outputs).
        out[f"{name}.bias"] = (w[1],) if name.startswith("deconv") else (w[0],)
    return out


# --- the model --------------------------------------------------------------------------------------


def _bias(p: dict, name: str) -> np.ndarray:
    return p[f"{name}.bias"][:, None, None]  # broadcast over (H, W) of a (B, C, H, W) map


def _decoder(p: dict[str, np.ndarray], z: np.ndarray) -> dict:
    """Decoder intermediates from float64 params p and latent z (n, latent); 'logits' is (n, 784)."""
    n = z.shape[0]
    a3 = z @ p["fc_dec.weight"].T + p["fc_dec.bias"]
    h3 = np.maximum(a3, 0.0).reshape(n, DEC_CHANNELS, DEC_SIDE, DEC_SIDE)  # torch's .view order
    a4 = conv_transpose2d(h3, p["deconv1.weight"], 2, 1, 1) + _bias(p, "deconv1")
    h4 = np.maximum(a4, 0.0)
    a5 = conv_transpose2d(h4, p["deconv2.weight"], 2, 1, 1) + _bias(p, "deconv2")
    h5 = np.maximum(a5, 0.0)
    logits = conv_transpose2d(h5, p["deconv3.weight"], 1, 1) + _bias(p, "deconv3")
    return {"a3": a3, "h3": h3, "a4": a4, "h4": h4, "a5": a5, "h5": h5, "logits": logits.reshape(n, -1)}


def forward(params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray | None) -> dict:
    """The forward pass on one batch x (B, 784) in [0, 1]; eps (B, latent) or None (z = mu).

    Returns every intermediate the backward pass needs ('a*' pre-activations, 'h*' ReLU outputs) plus
    'mu', 'logvar', 'logits' (B, 784), 'recon' = sigmoid(logits) and 'loss' = 'bce' + 'kld', batch sums.
    """
    p = as_float64(params)
    x = np.asarray(x, dtype=np.float64)
    img = x.reshape(x.shape[0], 1, IMAGE_SIDE, IMAGE_SIDE)
    a1 = conv2d(img, p["conv1.weight"], 2) + _bias(p, "conv1")
    h1 = np.maximum(a1, 0.0)
    a2 = conv2d(h1, p["conv2.weight"], 2) + _bias(p, "conv2")
    h2 = np.maximum(a2, 0.0)
    enc = h2.reshape(x.shape[0], -1) @ p["fc_enc.weight"].T + p["fc_enc.bias"]  # C,H,W flatten
    latent = enc.shape[1] // 2
    mu, logvar = enc[:, :latent], enc[:, latent:]
    std = np.exp(0.5 * logvar)
    z = mu if eps is None else mu + np.asarray(eps, dtype=np.float64) * std
    dec = _decoder(p, z)
    logits = dec["logits"]
    bce, kld = bce_sum(logits, x), kl_divergence(mu, logvar)  # the objective both VAE workloads share
    return {"x": x, "img": img, "a1": a1, "h1": h1, "a2": a2, "h2": h2, "mu": mu, "logvar": logvar,
            "std": std, "z": z, **dec, "recon": sigmoid(logits), "bce": bce, "kld": kld, "loss": bce + kld}


def loss(params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray | None) -> float:
    """Batch-sum BCE + KLD of one batch."""
    return forward(params, x, eps)["loss"]


def loss_and_grad(params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray | None) -> tuple[float, dict]:
    """The batch-sum loss and its gradient w.r.t. every parameter, by a hand-written backward pass."""
    p = as_float64(params)
    f = forward(p, x, eps)
    b = f["x"].shape[0]
    g: dict[str, np.ndarray] = {}

    def deconv_back(name: str, d_out: np.ndarray, inp: np.ndarray, stride: int, pad: int) -> np.ndarray:
        # y = conv2d_input_grad(inp, w): its adjoint in inp is conv2d(., w); in w, the weight grad of
        # the conv whose input is d_out and whose output gradient is inp (roles swapped).
        w = p[f"{name}.weight"]
        g[f"{name}.weight"] = conv2d_weight_grad(d_out, inp, w.shape[-1], stride, pad)
        g[f"{name}.bias"] = d_out.sum(axis=(0, 2, 3))
        return conv2d(d_out, w, stride, pad)

    def conv_back(name: str, d_out: np.ndarray, inp: np.ndarray, stride: int) -> np.ndarray:
        w = p[f"{name}.weight"]
        g[f"{name}.weight"] = conv2d_weight_grad(inp, d_out, w.shape[-1], stride)
        g[f"{name}.bias"] = d_out.sum(axis=(0, 2, 3))
        return conv2d_input_grad(d_out, w, inp.shape[2:], stride)

    def linear_back(name: str, d_out: np.ndarray, inp: np.ndarray) -> np.ndarray:
        g[f"{name}.weight"] = d_out.T @ inp
        g[f"{name}.bias"] = d_out.sum(axis=0)
        return d_out @ p[f"{name}.weight"]

    d_logits = (f["recon"] - f["x"]).reshape(f["img"].shape)  # d/dl [softplus(l) - x*l]
    d_a5 = deconv_back("deconv3", d_logits, f["h5"], 1, 1) * (f["a5"] > 0)  # ReLU'(0) = 0, as in torch
    d_a4 = deconv_back("deconv2", d_a5, f["h4"], 2, 1) * (f["a4"] > 0)
    d_h3 = deconv_back("deconv1", d_a4, f["h3"], 2, 1)
    d_a3 = d_h3.reshape(b, -1) * (f["a3"] > 0)
    d_z = linear_back("fc_dec", d_a3, f["z"])
    d_mu, d_logvar = d_kl(f["mu"], f["logvar"])
    d_mu = d_mu + d_z
    if eps is not None:  # z = mu + eps*exp(lv/2) also depends on lv
        d_logvar = d_logvar + d_z * np.asarray(eps, dtype=np.float64) * 0.5 * f["std"]
    d_h2 = linear_back("fc_enc", np.concatenate([d_mu, d_logvar], axis=1), f["h2"].reshape(b, -1))
    d_a2 = d_h2.reshape(f["a2"].shape) * (f["a2"] > 0)
    d_a1 = conv_back("conv2", d_a2, f["h1"], 2) * (f["a1"] > 0)
    g["conv1.weight"] = conv2d_weight_grad(f["img"], d_a1, KERNEL, 2)  # the data needs no gradient
    g["conv1.bias"] = d_a1.sum(axis=(0, 2, 3))
    return f["loss"], {k: g[k] for k in params}  # state_dict order, as given


def encode(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar), each (B, latent) float64, of images x (B, 784): the forward pass's own."""
    f = forward(params, x, None)
    return f["mu"], f["logvar"]


def decode_logits(params: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """Bernoulli logits, (n, 784) float64, of latent codes z (n, latent)."""
    return _decoder(as_float64(params), np.asarray(z, dtype=np.float64))["logits"]


def decode(params: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """Bernoulli means sigmoid(logits), (n, 784) float64, of latent codes z (n, latent): report figures."""
    return sigmoid(decode_logits(params, z))


# --- FLOPs ------------------------------------------------------------------------------------------

def layer_macs(model) -> dict[str, int]:
    """Multiply-adds of each layer's forward pass for one sample.

    Linear: in x out. Conv2d: OUTPUT positions x in x out x kh x kw. ConvTranspose2d: INPUT positions
    x in x out x kh x kw (every input pixel scatters a full k x k patch, including taps that land in the
    cropped padding; torch.utils.flop_counter counts the same). With latent 20 (weights' prod x positions):
    conv1 169*288 = 48,672; conv2 36*18,432 = 663,552; fc_enc 92,160; fc_dec 31,360;
    deconv1 49*18,432 = 903,168; deconv2 196*18,432 = 3,612,672; deconv3 784*288 = 225,792.
    """
    s = param_shapes(model)
    positions = {"conv1": CONV1_SIDE**2, "conv2": ENC_SIDE**2, "fc_enc": 1, "fc_dec": 1,
                 "deconv1": DEC_SIDE**2, "deconv2": DECONV1_SIDE**2, "deconv3": IMAGE_SIDE**2}
    return {name: n * int(np.prod(s[f"{name}.weight"])) for name, n in positions.items()}


def train_flops_per_sample(model) -> int:
    """Convolution and matrix-product FLOPs of one training sample (2 per multiply-add, elementwise ignored).

    Forward: every layer once (M = 5,577,376 MACs at latent 20). Backward: a layer's weight gradient
    costs its forward's MACs (one product per (tap, position) pair), and so does its input gradient,
    needed by every layer but conv1 (the data needs none): 2 * (3M - conv1) = 33,366,912 at latent 20.
    """
    macs = layer_macs(model)
    return 2 * (3 * sum(macs.values()) - macs["conv1"])


def eval_flops_per_sample(model) -> int:
    """Eval encodes once and decodes twice (z = mu and one sampled z): 2 * (enc + 2 dec) FLOPs; at
    latent 20 enc = conv1 + conv2 + fc_enc = 804,384 and dec = 4,772,992 MACs, so 20,700,736."""
    macs = layer_macs(model)
    enc = macs["conv1"] + macs["conv2"] + macs["fc_enc"]
    return 2 * (enc + 2 * (sum(macs.values()) - enc))
