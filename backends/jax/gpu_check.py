"""`python -m backends.jax.gpu_check`: whether jax can use the GPU, as one JSON line for
harness/execution/devices.py (`--device auto` and the checks behind `--device cuda`).

Prints version, cuda (the installed jax CUDA plugins, None when there is none) and gpus (the GPUs
jax sees).
"""
from __future__ import annotations

import importlib.metadata
import json

import jax


def answer() -> dict:
    """The framework's answer to the device check."""
    try:
        n = len(jax.devices("gpu"))
    except RuntimeError:
        n = 0
    names = [d.metadata["Name"] or "" for d in importlib.metadata.distributions()]
    plugins = [name for name in names if "cuda" in name and name.startswith("jax")]
    return {"version": jax.__version__, "cuda": ",".join(sorted(plugins)) or None, "gpus": n}


if __name__ == "__main__":
    print(json.dumps(answer()))
