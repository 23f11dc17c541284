"""benchmarks/gpu_check.sh: its CPU dry run end to end, and a run whose every step fails (it keeps going,
writes the whole summary and exits 1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["probe", "all-5", "full-50", "jax-warm-50", "torch-compile-reduce-overhead-50", "parity", "resume",
         "check", "pytest-cuda"]


def gpu_check(data_dir: Path, out: Path, python: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_TINY": "1", "PYTHON": python,
           "GPU_CHECK_COMPILE_MODES": "default reduce-overhead", **env}
    return subprocess.run(["bash", str(SCRIPT), str(data_dir), str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=3000)


def steps(out: Path) -> list[list[str]]:
    return [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]


def backend(run_dir: Path, name: str) -> dict:
    return next(r for r in json.loads((run_dir / "results.json").read_text())["results"] if r["backend"] == name)


@pytest.mark.slow
def test_cpu_dry_run(tmp_path, mnist):
    out = tmp_path / "out"
    proc = gpu_check(mnist.directory, out, sys.executable, VAE_BENCH_CACHE=str(tmp_path / "cache"))
    summary = (out / "summary.md").read_text()
    assert proc.returncode == 0, proc.stdout[-3000:] + summary
    assert [s[0] for s in steps(out)] == STEPS and all(s[1] == "ok" for s in steps(out))
    assert summary.startswith("# GPU check: all steps passed")
    assert "| jax: warm compile s (jax-warm-50) |" in summary and "n/a on cpu" in summary
    runs = out / "runs"
    for name in ("all-5", "full-50", "torch-compile-reduce-overhead-50"):
        assert (runs / name / "report.md").is_file()
    assert backend(runs / "full-50", "jax")["compile_cache"] == "cold"  # --cold-compile
    assert backend(runs / "full-50", "torch-compile")["compile_cache"] == "cold"
    assert backend(runs / "jax-warm-50", "jax")["compile_cache"] == "warm"  # all-5 filled the cache
    assert backend(runs / "torch-compile-reduce-overhead-50", "torch-compile")["status"] == "ok"
    assert (runs / "parity" / "parity.json").is_file()
    assert "equals" in (out / "logs" / "resume.log").read_text()
    assert backend(runs / "resume-interrupted", "torch")["epochs"]


def test_failed_steps_do_not_stop_the_check(tmp_path):
    """Every harness command fails at once (a stand-in interpreter); the summary still lists every step."""
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/bash\nif [ "$1" = -m ]; then echo "fake failure: $*" >&2; exit 3; fi\n'
                    f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    (tmp_path / "data").mkdir()
    out = tmp_path / "out"
    proc = gpu_check(tmp_path / "data", out, str(fake))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert [s[0] for s in steps(out)] == STEPS
    assert all(s[1] == "failed" for s in steps(out))
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# GPU check: FAILED: probe, all-5, full-50")
    assert "| parity | failed |" in summary and "unmeasured" in summary.split("## Goals")[1]
    assert "fake failure: -m harness probe" in (out / "logs" / "probe.log").read_text()
    assert "gpu check FAILED" in proc.stdout


def test_usage_errors():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = subprocess.run(["bash", str(SCRIPT), "/nonexistent-data", "/tmp/x"], capture_output=True, text=True)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr
