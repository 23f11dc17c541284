"""Which device a run trains on: `--device auto`, and the checks behind `--device cuda`.

The harness never imports a framework, so whether a framework can use the GPU is asked of it in a
short child process running the check its package declares (`Framework.gpu_check` in the registry,
e.g. `python -m backends.torch.gpu_check`), and only when an NVIDIA GPU is visible at all. `auto` picks cuda
only when every framework of the chosen backends can use it, since backends on different devices
would not be comparable; otherwise cpu, and it says why either way. `--device cuda` with a framework
that cannot use the GPU (a CPU-only build, a missing CUDA plugin) is one error line naming the fix,
before any job starts.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import backends
from harness.errors import HarnessError

CUDA_INSTALL = "pip install -c constraints-cuda.txt -e '.[cuda]'"
CHECK_TIMEOUT = 180.0  # seconds: a first import of a CUDA framework can be slow on a cold disk

@dataclass(frozen=True)
class GpuSupport:
    """Whether one framework can train on the GPU, and the evidence in words."""

    framework: str
    usable: bool
    detail: str
    gpus: int = 0


@dataclass(frozen=True)
class Resolution:
    """The device a run uses and why."""

    device: str
    reason: str


def gpu_visible() -> bool:
    """An NVIDIA driver node exists (no framework needed)."""
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def describe(framework: str, answer: dict) -> GpuSupport:
    """A child's JSON answer as a GpuSupport (pure: the tests feed it hand-made answers)."""
    version, cuda, gpus = answer.get("version"), answer.get("cuda"), int(answer.get("gpus") or 0)
    name = f"{framework} {version}"
    if not cuda:
        return GpuSupport(framework, False, f"{name} is a CPU-only build", 0)
    if gpus == 0:
        return GpuSupport(framework, False, f"{name} (CUDA {cuda}) sees no GPU", 0)
    return GpuSupport(framework, True, f"{name} (CUDA {cuda}) sees {gpus} GPU(s)", gpus)


@functools.cache
def framework_support(framework: str) -> GpuSupport:
    """Ask `framework`, in a child process, whether it can use the GPU."""
    known = backends.FRAMEWORKS.get(framework)
    if known is None or not known.gpu_check:
        return GpuSupport(framework, False, f"no GPU check is known for {framework}")
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # the check must not grab GPU memory
    try:
        proc = subprocess.run([sys.executable, "-m", known.gpu_check], capture_output=True, text=True,
                              timeout=CHECK_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return GpuSupport(framework, False, f"{framework} did not answer within {CHECK_TIMEOUT:g} s")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return GpuSupport(framework, False, f"{framework} failed to start: {last}")
    return describe(framework, json.loads(lines[-1]))


def resolve(device: str, frameworks: Sequence[str], *, visible: Callable[[], bool] | None = None,
            support: Callable[[str], GpuSupport] | None = None) -> Resolution:
    """Validate `device` for backends of `frameworks`; 'auto' becomes cpu or cuda (see module docstring).

    `visible` and `support` replace the detections (gpu_visible, framework_support) in tests.
    """
    visible = visible or gpu_visible
    support = support or framework_support
    if device == "cpu":
        return Resolution("cpu", "asked for")
    is_cuda = device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())
    if device != "auto" and not is_cuda:
        raise HarnessError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if not visible():
        if device == "auto":
            return Resolution("cpu", "no NVIDIA GPU is visible on this machine")
        raise HarnessError(f"device {device!r} requested but no NVIDIA GPU is visible on this machine; "
                           "use --device cpu (there is no silent fallback)")
    answers = [support(f) for f in dict.fromkeys(frameworks)]
    unusable = [a for a in answers if not a.usable]
    if device == "auto":
        if unusable:
            why = "; ".join(a.detail for a in unusable)
            return Resolution("cpu", f"a GPU is visible, but {why}; all backends run on cpu to stay comparable "
                                     f"(install the CUDA builds: {CUDA_INSTALL})")
        return Resolution("cuda", "; ".join(a.detail for a in answers) or "an NVIDIA GPU is visible")
    if unusable:
        raise HarnessError(f"device {device!r}: {'; '.join(a.detail for a in unusable)}; install the CUDA "
                           f"builds ({CUDA_INSTALL}) or use --device cpu")
    index = int(device[5:]) if device.startswith("cuda:") else 0
    short = [a for a in answers if index >= a.gpus]
    if short:
        raise HarnessError(f"device {device!r}: {'; '.join(a.detail for a in short)}")
    return Resolution(device, "; ".join(a.detail for a in answers) or "an NVIDIA GPU is visible")


def resolve_device(device: str, frameworks: Sequence[str] = ()) -> str:
    """Validate a --device value for backends of `frameworks` without importing them (`resolve`);
    for 'auto', the choice and its reason go to stderr."""
    resolution = resolve(device, frameworks)
    if device == "auto":
        print(f"device auto: {resolution.device}: {resolution.reason}", file=sys.stderr)
    return resolution.device
