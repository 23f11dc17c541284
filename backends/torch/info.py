"""What a child records about torch (read by backends/info.py once torch is imported)."""
from __future__ import annotations

import os
from typing import Any

import torch

from backends.torch import precision


def versions() -> dict[str, Any]:
    """torch's version, threads and numeric settings."""
    return {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_cuda": torch.version.cuda, **precision.settings(),
            "mkl_cbwr": os.environ.get("MKL_CBWR") or "off"}  # harness/execution/child_env.py
