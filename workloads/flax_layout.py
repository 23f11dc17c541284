"""Parameters between the neutral layout (torch state_dict) and Flax's nested dict, for any workload.

`{"layer.weight", "layer.bias"}` <-> `{"layer": {"kernel", "bias"}}`, the pure-dict form of
`nnx.split(model)[1]`, which `nnx.merge(graphdef, tree)` accepts. Only axes move, so the round trip is
bitwise exact; it serves parameters, gradients and Adam moments alike (they share the tree's shape).
Kernel axes: Linear (out, in) -> (in, out); Conv2d (out, in, kh, kw) -> (kh, kw, in, out); a workload
whose layers need other permutations passes its own.
"""
from __future__ import annotations

import numpy as np

TO_FLAX_AXES = {2: (1, 0), 4: (2, 3, 1, 0)}


def to_flax(params: dict[str, np.ndarray], axes: dict[int, tuple[int, ...]] = TO_FLAX_AXES) -> dict:
    """Neutral layout -> Flax's nested dict of fresh C-contiguous NumPy arrays (values and dtype kept)."""
    tree: dict[str, dict[str, np.ndarray]] = {}
    for name, value in params.items():
        layer, kind = name.rsplit(".", 1)
        value = np.asarray(value)
        if kind == "weight":
            tree.setdefault(layer, {})["kernel"] = np.array(value.transpose(axes[value.ndim]), order="C")
        elif kind == "bias":
            tree.setdefault(layer, {})["bias"] = np.array(value, order="C")
        else:
            raise ValueError(f"unexpected parameter {name!r}: neutral names end in .weight or .bias")
    return tree


def from_flax(tree, layers: tuple[str, ...], axes: dict[int, tuple[int, ...]] = TO_FLAX_AXES) -> dict[str, np.ndarray]:
    """The exact inverse of `to_flax`, in state_dict order (`layers`, weight then bias each)."""
    inverse = {n: tuple(np.argsort(a)) for n, a in axes.items()}
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        kernel, bias = (np.asarray(tree[layer][k]) for k in ("kernel", "bias"))
        out[f"{layer}.weight"] = np.array(kernel.transpose(inverse[kernel.ndim]), order="C")
        out[f"{layer}.bias"] = np.array(bias, order="C")
    return out
