"""What a child process records about its framework: versions, threads and numeric settings.

Framework code, so it lives with the engines: the harness core never imports torch or jax. It only
reads frameworks the engine has already imported (sys.modules), so it never imports one itself.
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import Any

from harness.config import RunConfig


def framework_info(backend: str, config: RunConfig, described: dict[str, Any] | None = None) -> dict[str, Any]:
    """Called inside the child, after the framework was imported: versions and numeric settings, plus what
    the backend says of its own arrangement (`describe()`, e.g. which step torch-compile runs)."""
    # the engine's own options (e.g. torch-compile's mode, jax's epoch), then what it says it runs
    info: dict[str, Any] = {"precision": config.precision, "noise": config.noise, **config.options(backend),
                            **(described or {})}
    if "torch" in sys.modules:
        import torch

        from backends import torch_precision
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    torch_cuda=torch.version.cuda, **torch_precision.settings(),
                    mkl_cbwr=os.environ.get("MKL_CBWR") or "off")  # harness/execution/child_env.py
    if "jax" in sys.modules:
        import jax
        info.update(jax=jax.__version__, jax_backend=jax.default_backend(),
                    jax_matmul_precision=str(jax.config.jax_default_matmul_precision),
                    jax_devices=[str(d) for d in jax.devices()])
        for pkg in ("flax", "optax", "jaxlib"):
            try:
                info[pkg] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                pass
    return info
