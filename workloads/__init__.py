"""The workloads: what is trained, one folder each (see workloads/spec.py for what a folder holds).

Listing and describing workloads imports NumPy only; a framework's model file is imported by the
engine that trains it, in its own child process.
"""
from __future__ import annotations

import importlib

from workloads.spec import Metric, Workload

PACKAGES = {"mlp-vae": "workloads.mlp_vae", "conv-vae": "workloads.conv_vae"}
DEFAULT = "mlp-vae"


def names() -> list[str]:
    """The workload names users can pass to --workload."""
    return list(PACKAGES)


def get(name: str) -> Workload:
    """The workload called `name`; ValueError naming the known ones otherwise."""
    if name not in PACKAGES:
        raise ValueError(f"unknown workload {name!r}; known workloads: {', '.join(PACKAGES)}")
    return importlib.import_module(PACKAGES[name]).WORKLOAD


__all__ = ["DEFAULT", "Metric", "Workload", "get", "names"]
