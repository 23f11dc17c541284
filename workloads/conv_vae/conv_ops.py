"""Float64 NumPy convolutions (no bias) and their gradients, for the conv VAE's oracle.

Convolutions are im2col: a strided sliding_window_view of the padded input (no copy) contracted with
the kernel by einsum. A transposed convolution is computed as what it is by definition, the INPUT
GRADIENT of the matching Conv2d (col2im: every input pixel scatter-adds a k x k patch), so one pair
of routines serves both layer kinds and their backward passes.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_out_side(n: int, k: int, stride: int, pad: int) -> int:
    """Output side of Conv2d (floor division: trailing rows a stride cannot reach are dropped)."""
    return (n + 2 * pad - k) // stride + 1


def deconv_out_side(n: int, k: int, stride: int, pad: int, out_pad: int = 0) -> int:
    """Output side of ConvTranspose2d, as torch defines it."""
    return (n - 1) * stride - 2 * pad + k + out_pad


def _windows(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """im2col as a view: (B, C, H, W) -> (B, C, Ho, Wo, k, k), window (h, w) read at (stride*h, stride*w)."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def conv2d(x: np.ndarray, w: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """torch.nn.functional.conv2d without bias (cross-correlation): x (B, C, H, W), w (O, C, k, k)."""
    return np.einsum("bchwij,ocij->bohw", _windows(x, w.shape[-1], stride, pad), w, optimize=True)


def conv2d_weight_grad(x: np.ndarray, d_out: np.ndarray, k: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """d(sum(d_out * conv2d(x, w)))/dw, shape (O, C, k, k): each tap correlates d_out with what it read."""
    return np.einsum("bohw,bchwij->ocij", d_out, _windows(x, k, stride, pad), optimize=True)


def conv2d_input_grad(d_out: np.ndarray, w: np.ndarray, in_hw: tuple, stride: int = 1, pad: int = 0):
    """d(sum(d_out * conv2d(x, w)))/dx for x of spatial size in_hw (col2im).

    Each output position sends d_out * w back to the k x k input pixels its window read; the padded
    border is cut off at the end. Input pixels no window reached (stride remainder) get zero.
    """
    b, _, ho, wo = d_out.shape
    k = w.shape[-1]
    cols = np.einsum("bohw,ocij->bcijhw", d_out, w, optimize=True)
    dxp = np.zeros((b, w.shape[1], in_hw[0] + 2 * pad, in_hw[1] + 2 * pad))
    for i in range(k):  # k*k strided slices: a scatter-add without np.add.at's per-element cost
        for j in range(k):
            dxp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += cols[:, :, i, j]
    return dxp[:, :, pad:pad + in_hw[0], pad:pad + in_hw[1]]


def conv_transpose2d(x: np.ndarray, w: np.ndarray, stride: int = 1, pad: int = 0, out_pad: int = 0):
    """torch.nn.functional.conv_transpose2d without bias: x (B, I, H, W), w (I, O, k, k).

    By definition the input gradient of conv2d(., w, stride, pad) at an output of the larger size;
    output_padding only enlarges that size (the extra last rows/columns receive what the scatter reaches).
    """
    out_hw = tuple(deconv_out_side(n, w.shape[-1], stride, pad, out_pad) for n in x.shape[2:])
    return conv2d_input_grad(x, w, out_hw, stride, pad)
