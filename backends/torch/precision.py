"""TF32 on or off in torch, through the one API the installed torch offers.

torch >= 2.9 has per-backend `fp32_precision` settings ("ieee" or "tf32": torch.backends.cuda.matmul,
torch.backends.cudnn.conv/rnn, torch.backends.mkldnn.matmul); older torch has `allow_tf32` and
`set_float32_matmul_precision`. Recent torch raises when the two are mixed ("you have used mix of the
legacy and new APIs"), also when the old getters are read after the new setters, so a process uses one
API throughout: `tf32_api()` picks it, `set_tf32()` and `settings()` use only it. The settings are those
the old calls made (checked with torch 2.13: set_float32_matmul_precision("highest") plus
allow_tf32=False leave cuda.matmul and mkldnn.matmul at "ieee"), so the CPU's arithmetic is unchanged.
"""
from __future__ import annotations

from typing import Any

import torch

NEW_API = "fp32_precision"
OLD_API = "allow_tf32"
# (object path under torch.backends, attribute owner) set by the new API; rnn for parity with the old
# cudnn.allow_tf32, which covered cuDNN's RNNs too
_NEW_SETTINGS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul")


def tf32_api(backends: Any = None) -> str:
    """NEW_API when this torch has every per-backend `fp32_precision` setting, else OLD_API.

    `backends` stands in for torch.backends in tests (an object without the settings: an old torch).
    """
    backends = torch.backends if backends is None else backends
    try:
        for path in _NEW_SETTINGS:
            _resolve(backends, path).fp32_precision
    except AttributeError:
        return OLD_API
    return NEW_API


def _resolve(backends: Any, path: str) -> Any:
    for part in path.split("."):
        backends = getattr(backends, part)
    return backends


def set_tf32(on: bool) -> str:
    """Float32 matrix products and convolutions in TF32 (`on`) or IEEE float32; returns the API used."""
    api = tf32_api()
    if api == NEW_API:
        for path in _NEW_SETTINGS:
            _resolve(torch.backends, path).fp32_precision = "tf32" if on else "ieee"
    else:
        torch.set_float32_matmul_precision("high" if on else "highest")
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    return api


def settings() -> dict[str, Any]:
    """What backend_info records: the API and its settings, read through that API only (reading the old
    getters after the new setters raises on recent torch)."""
    api = tf32_api()
    if api == NEW_API:
        values = {path: _resolve(torch.backends, path).fp32_precision for path in _NEW_SETTINGS}
        # the old key, kept for readers of older records: what torch.get_float32_matmul_precision() said
        # for these settings before the new API ("high" = TF32 matmuls allowed)
        old = "high" if values["cuda.matmul"] == "tf32" else "highest"
        return {"tf32_api": api, "fp32_precision": values, "matmul_precision": old}
    return {"tf32_api": api, "matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}


def tf32_enabled() -> bool:
    """Whether CUDA matmuls may use TF32 now (read through the API in use)."""
    if tf32_api() == NEW_API:
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)
