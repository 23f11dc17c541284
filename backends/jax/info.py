"""What a child records about jax (read by backends/info.py once jax is imported)."""
from __future__ import annotations

import importlib.metadata
from typing import Any

import jax


def versions() -> dict[str, Any]:
    """jax's version, backend, matmul precision and devices, and the versions of flax, optax and jaxlib."""
    info: dict[str, Any] = {"jax": jax.__version__, "jax_backend": jax.default_backend(),
                            "jax_matmul_precision": str(jax.config.jax_default_matmul_precision),
                            "jax_devices": [str(d) for d in jax.devices()]}
    for pkg in ("flax", "optax", "jaxlib"):
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return info
