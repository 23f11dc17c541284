"""torch and torch-compile flush subnormals on the CPU by default, like XLA:CPU (backends/torch_common.py
set_denormals); `denormals=keep` keeps IEEE subnormals; torch-reference stays the example (no option)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import backends  # noqa: E402
from backends import torch_common as tc  # noqa: E402
from harness.errors import HarnessError  # noqa: E402

SUBNORMAL = 1e-39  # below float32's smallest normal, 1.18e-38


def test_flush_and_keep_change_subnormal_arithmetic():
    x = torch.tensor([SUBNORMAL], dtype=torch.float32)
    try:
        assert "flushed" in tc.set_denormals("flush")
        assert (x * 1.0).item() == 0.0  # DAZ: the subnormal input reads as zero
        assert "kept" in tc.set_denormals("keep")
        assert (x * 1.0).item() == pytest.approx(SUBNORMAL, rel=1e-6)
    finally:
        torch.set_flush_denormal(False)


def test_the_option_belongs_to_torch_and_torch_compile_only():
    assert backends.REGISTRY["torch"].options["denormals"][0] == "flush"  # the default
    backends.check_options({"torch": {"denormals": "keep"}, "torch-compile": {"denormals": "flush"}})
    with pytest.raises(HarnessError):
        backends.check_options({"torch-reference": {"denormals": "flush"}})
    with pytest.raises(HarnessError):
        backends.check_options({"torch": {"denormals": "sometimes"}})
