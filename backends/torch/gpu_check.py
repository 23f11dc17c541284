"""`python -m backends.torch.gpu_check`: whether torch can use the GPU, as one JSON line for
harness/execution/devices.py (`--device auto` and the checks behind `--device cuda`).

Prints version, cuda (the CUDA build, None for a CPU-only build) and gpus (the GPUs torch sees).
"""
from __future__ import annotations

import json

import torch


def answer() -> dict:
    """The framework's answer to the device check."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"version": torch.__version__, "cuda": torch.version.cuda, "gpus": n}


if __name__ == "__main__":
    print(json.dumps(answer()))
