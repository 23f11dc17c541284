"""`--device auto` and the `--device cuda` pre-checks (harness/execution/devices.py), detection mocked."""
from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.execution import devices
from harness.execution.devices import GpuSupport

TORCH_GPU = GpuSupport("torch", True, "torch 2.13.0 (CUDA 13.0) sees 1 GPU(s)", 1)
JAX_GPU = GpuSupport("jax", True, "jax 0.10.2 (CUDA jax-cuda13-plugin) sees 1 GPU(s)", 1)
TORCH_CPU = devices.describe("torch", {"version": "2.13.0+cpu", "cuda": None, "gpus": 0})


def resolve(device, frameworks, visible=True, **answers):
    """devices.resolve with the GPU's presence and each framework's answer given."""
    def support(framework):
        return answers[framework]
    return devices.resolve(device, frameworks, visible=lambda: visible, support=support)


def test_describe():
    assert TORCH_CPU == GpuSupport("torch", False, "torch 2.13.0+cpu is a CPU-only build", 0)
    no_gpu = devices.describe("jax", {"version": "0.10.2", "cuda": "jax-cuda13-plugin", "gpus": 0})
    assert not no_gpu.usable and "sees no GPU" in no_gpu.detail
    assert devices.describe("torch", {"version": "2.13.0", "cuda": "13.0", "gpus": 2}).gpus == 2


def test_auto_without_a_gpu_is_cpu_and_asks_no_framework():
    r = resolve("auto", ["torch", "jax"], visible=False)  # no answers given: asking would raise KeyError
    assert r.device == "cpu" and "no NVIDIA GPU" in r.reason


def test_auto_picks_cuda_only_when_every_framework_can_use_it():
    r = resolve("auto", ["torch", "jax"], torch=TORCH_GPU, jax=JAX_GPU)
    assert r.device == "cuda" and "torch 2.13.0 (CUDA 13.0)" in r.reason and "jax 0.10.2" in r.reason
    r = resolve("auto", ["torch", "jax"], torch=TORCH_CPU, jax=JAX_GPU)
    assert r.device == "cpu"
    assert "torch 2.13.0+cpu is a CPU-only build" in r.reason and "constraints-cuda.txt" in r.reason
    assert resolve("auto", ["jax"], jax=JAX_GPU).device == "cuda"  # torch's build does not matter to jax alone


def test_cuda_with_a_cpu_only_framework_is_one_clear_error():
    with pytest.raises(HarnessError) as err:
        resolve("cuda", ["torch"], torch=TORCH_CPU)
    message = str(err.value)
    assert "\n" not in message
    assert "torch 2.13.0+cpu is a CPU-only build" in message and ".[cuda]" in message and "--device cpu" in message


def test_cuda_checks():
    assert resolve("cuda", ["torch", "jax"], torch=TORCH_GPU, jax=JAX_GPU).device == "cuda"
    assert resolve("cuda:0", ["torch"], torch=TORCH_GPU).device == "cuda:0"
    with pytest.raises(HarnessError, match="cuda:1"):
        resolve("cuda:1", ["torch"], torch=TORCH_GPU)  # one GPU only
    with pytest.raises(HarnessError, match="no NVIDIA GPU is visible"):
        resolve("cuda", ["torch"], visible=False)
    with pytest.raises(HarnessError, match="unknown device 'tpu'"):
        resolve("tpu", ["torch"])
    assert resolve("cpu", ["torch"]).device == "cpu"


def test_resolve_device_prints_why_auto_chose(monkeypatch, capsys):
    monkeypatch.setattr(devices, "gpu_visible", lambda: True)
    monkeypatch.setattr(devices, "framework_support", lambda f: {"torch": TORCH_CPU, "jax": JAX_GPU}[f])
    assert devices.resolve_device("auto", ["torch", "jax"]) == "cpu"
    err = capsys.readouterr().err
    assert err.startswith("device auto: cpu: a GPU is visible, but torch 2.13.0+cpu is a CPU-only build")


def test_the_real_check_answers_on_this_machine():
    """The child check itself (no GPU here): torch answers with its version, whatever its build."""
    pytest.importorskip("torch")
    devices.framework_support.cache_clear()
    answer = devices.framework_support("torch")
    assert answer.detail.startswith("torch ") and (answer.usable == (answer.gpus > 0))
