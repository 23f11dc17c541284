"""Shared fixtures: real MNIST (verified cache), the test plugin backends, and a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Children (harness workers) inherit these: the test-only backends and an importable `tests` package.
os.environ["VAE_BENCH_PLUGINS"] = "tests.plugin_backends"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

# Few samples keep the fault and CLI tests fast; the loss-band tests use all of MNIST.
SMALL = ["--train-limit", "512", "--test-limit", "256", "--no-probe", "--no-report"]


@pytest.fixture(scope="session")
def mnist():
    from harness import data
    return data.load()


def harness(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run `python -m harness ARGS` from the repository root; text output captured."""
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kw)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for frag in fragments:
        assert frag in lines[0], lines[0]


@pytest.fixture(autouse=True)
def ieee_subnormals_after_each_test():
    """A torch backend set up in the test process flushes subnormals (backends/torch/common.py
    set_denormals: process state, meant for the backend's own child process); give the next test the
    IEEE arithmetic it expects (hypothesis, for one, refuses to run without subnormals)."""
    yield
    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)
