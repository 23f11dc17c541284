"""The probe on the CPU: the float32 floor always, the bf16 floor for bf16 runs (backends/torch/probe.py,
harness/execution/probe.py, `harness probe`). Timings are only checked to exist, never compared."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch")

from harness.config import RunConfig  # noqa: E402
from harness.execution import probe  # noqa: E402

SMALL = 1280  # 10 batches: the floor of a tiny epoch, measured like a full one


def test_a_float32_run_gets_no_bf16_floor():
    out = probe.run(RunConfig(threads=1, train_limit=SMALL), repeats=1)
    assert out["floor_seconds_per_epoch"] > 0 and out["floor_batches"] == 10
    assert "floor_seconds_per_epoch_bf16" not in out and "peak_gflops_bf16" not in out


def test_a_bf16_run_gets_its_own_floor_and_peak():
    out = probe.run(RunConfig(threads=1, train_limit=SMALL, precision="bf16"), repeats=1)
    assert out["floor_seconds_per_epoch_bf16"] > 0 and out["peak_gflops_bf16"] > 0
    assert out["floor_gflops_bf16"] == pytest.approx(out["train_flops_per_epoch"] / out["floor_seconds_per_epoch_bf16"] / 1e9)
    assert out["floor_seconds_per_epoch"] > 0  # the float32 figures stay, for the record


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True)


def test_the_probe_command_prints_the_bf16_floor():
    proc = harness("probe", "--bf16", "--threads", "1", "--repeats", "1", "--train-limit", str(SMALL))
    assert proc.returncode == 0, proc.stderr
    assert "bf16: matmul peak" in proc.stdout and "s/epoch" in proc.stdout


def test_two_precisions_at_once_are_one_error_line():
    proc = harness("probe", "--bf16", "--allow-tf32")
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "one at a time" in proc.stderr


def test_the_floor_times_the_steps_products_and_nothing_else():
    from harness.config import ModelConfig
    from workloads.mlp_vae import train_flops_per_sample, train_products
    m = ModelConfig()
    # by hand: layer MACs 784*400 + 2*400*20 + 20*400 + 400*784 = 651,200; forward, weight gradients and
    # every input gradient but fc1's: 3 * 651,200 - 313,600 = 1,640,000 MACs = 3,280,000 FLOPs per sample
    assert train_flops_per_sample(m) == 3_280_000
    assert len(train_products(m, 128)) == 14
    assert sum(2 * r * k * c for r, k, c in train_products(m, 128)) == 128 * 3_280_000
