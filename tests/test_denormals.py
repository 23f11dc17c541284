"""torch and torch-compile flush subnormals on the CPU by default, like XLA:CPU (backends/torch/common.py
set_denormals); `denormals=keep` keeps IEEE subnormals; torch-reference stays the example (no option)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import backends  # noqa: E402
from backends.torch import common as tc  # noqa: E402
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


def test_the_record_says_when_threads_started_before_the_flag(tmp_path):
    """DAZ is per thread: threads that torch started before the flag keep IEEE arithmetic, and the
    record must not claim a flush that only the main thread does. In a fresh process with the flag set
    first (as a backend's child does it) every thread flushes; with the pool started first, not."""
    import subprocess
    import sys
    code = ("import torch; from backends.torch import common as tc; torch.set_num_threads(2); {first}"
            "print(tc.set_denormals('flush'))")
    fresh = subprocess.run([sys.executable, "-c", code.format(first="")], capture_output=True, text=True)
    late = subprocess.run([sys.executable, "-c", code.format(first="torch.ones(200_000).mul(2).sum(); ")],
                          capture_output=True, text=True)
    assert fresh.stdout.strip() == "flushed to zero on the CPU (FTZ/DAZ, as XLA:CPU)", fresh.stderr
    if torch.get_num_threads() > 1:  # one thread: nothing starts early
        assert late.stdout.strip().startswith("flushed on some CPU threads only"), late.stderr
