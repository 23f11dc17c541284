"""What a child process records about its framework: versions, threads and numeric settings.

Each framework package says it in its own `info` module (backends/torch/info.py, backends/jax/info.py);
this one only asks the frameworks already imported (sys.modules), so it never imports one itself.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

import backends
from harness.config import RunConfig


def framework_info(backend: str, config: RunConfig, described: dict[str, Any] | None = None) -> dict[str, Any]:
    """Called inside the child, after the framework was imported: versions and numeric settings, plus what
    the backend says of its own arrangement (`describe()`, e.g. which step torch-compile runs)."""
    # the engine's own options (e.g. torch-compile's mode, jax's epoch), then what it says it runs
    info: dict[str, Any] = {"precision": config.precision, "noise": config.noise, **config.options(backend),
                            **(described or {})}
    if config.noise == "counter":  # which counter-based noise: the definition's versioned name
        from harness.counter_noise import NOISE_DEFINITION
        info["noise_definition"] = NOISE_DEFINITION
    for framework in backends.FRAMEWORKS.values():
        if framework.info and framework.name in sys.modules:
            info.update(importlib.import_module(framework.info).versions())
    return info
