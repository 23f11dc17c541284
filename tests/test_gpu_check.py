"""benchmarks/gpu_check.sh: its CPU dry run end to end (--full), a run whose every step fails (it keeps
going, writes the whole summary and exits 1), and the default selection's budgets, skips and verdicts
with a stand-in interpreter (a step over its budget is stopped, `check` exiting 3 judged nothing)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["probe", "full-50", "roofline", "jax-warm-50", "all-5", "torch-compile-reduce-overhead-50",
         "torch-compile-max-autotune-50", "torch-compile-max-autotune-no-cudagraphs-50", "bf16-5", "conv-3",
         "iwae", "parity", "resume", "ensemble-compile", "ensemble-64", "ensemble-scaling", "check", "pytest-cuda",
         "calibrate-cuda"]
DEFAULT = ["probe", "full-50", "jax-warm-50", "all-5", "parity", "check", "pytest-cuda"]


def gpu_check(data_dir: Path, out: Path, python: str, *flags: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_TINY": "1", "PYTHON": python,
           "GPU_CHECK_COMPILE_MODES": "default reduce-overhead", **env}
    return subprocess.run(["bash", str(SCRIPT), *flags, str(data_dir), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3000)


def steps(out: Path) -> dict[str, list[str]]:
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert all(len(r) == 6 for r in rows), rows  # name, status, seconds, code, budget, note
    return {r[0]: r[1:] for r in rows}


def backend(run_dir: Path, name: str) -> dict:
    return next(r for r in json.loads((run_dir / "results.json").read_text())["results"] if r["backend"] == name)


def stand_in(tmp_path: Path, body: str) -> str:
    """An interpreter that answers `-m ...` with `body` (bash) and runs everything else with this Python."""
    fake = tmp_path / "python"
    # the scaling benchmark is a script, not a module: it answers as the harness commands do
    fake.write_text(f'#!/bin/bash\nif [ "$1" = -m ] || [[ "$1" == *ensemble_scaling.py ]]; then\n{body}\nfi\n'
                    f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    (tmp_path / "data").mkdir()
    return str(fake)


@pytest.mark.slow
def test_cpu_dry_run(tmp_path, mnist):
    out = tmp_path / "out"
    proc = gpu_check(mnist.directory, out, sys.executable, "--full", VAE_BENCH_CACHE=str(tmp_path / "cache"),
                     GPU_CHECK_BUDGET_SCALE="20")  # a busy 2-core CPU, not an H100
    summary = (out / "summary.md").read_text()
    assert proc.returncode == 0, proc.stdout[-3000:] + summary
    done = steps(out)
    assert list(done) == STEPS
    skipped = {"torch-compile-max-autotune-50", "torch-compile-max-autotune-no-cudagraphs-50", "calibrate-cuda",
               "roofline"}
    assert all(s[0] == ("skipped" if name in skipped else "ok") for name, s in done.items()), done
    assert done["calibrate-cuda"][4] == done["roofline"][4] == "GPU only"
    assert summary.startswith("# GPU check: every step run passed")
    assert "calibrate-cuda (GPU only)" in summary and "Over budget: none" in summary
    assert "| jax: warm compile s (jax-warm-50) |" in summary and "n/a on cpu" in summary
    assert "| jax-warm-50 | jax | " in summary.split("## Where each job's wall time went")[1]
    runs = out / "runs"
    for name in ("all-5", "full-50", "torch-compile-reduce-overhead-50", "bf16-5", "conv-3"):
        assert (runs / name / "report.md").is_file(), name
    # the check's own caches start empty: full-50 compiles cold and fills them for the runs after it
    assert backend(runs / "full-50", "jax")["compile_cache"] == "cold"
    assert backend(runs / "full-50", "torch-compile")["compile_cache"] == "cold"
    assert backend(runs / "jax-warm-50", "jax")["compile_cache"] == "warm"
    assert backend(runs / "all-5", "torch-compile")["compile_cache"] == "warm"
    assert backend(runs / "torch-compile-reduce-overhead-50", "torch-compile")["status"] == "ok"
    assert backend(runs / "bf16-5", "jax")["backend_info"]["precision"] == "bf16"
    assert json.loads((runs / "conv-3" / "results.json").read_text())["config"]["model"]["workload"] == "conv-vae"
    assert backend(runs / "full-50", "jax")["evaluation"]["iwae_subset"]["k"] == 20  # the iwae step (64 images)
    assert (runs / "parity" / "parity.json").is_file()
    assert "equals" in (out / "logs" / "resume.log").read_text()
    assert backend(runs / "resume-interrupted", "torch")["epochs"]


def test_failed_steps_do_not_stop_the_check(tmp_path):
    """Every harness command fails at once; the summary still lists every step of --full."""
    fake = stand_in(tmp_path, '    echo "fake failure: $*" >&2; exit 3')
    out = tmp_path / "out"
    proc = gpu_check(tmp_path / "data", out, fake, "--full")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    done = steps(out)
    assert list(done) == STEPS
    needs = {"iwae", "check"}  # both read full-50, which failed
    skipped = needs | {"ensemble-64",  # needs ensemble-compile, which failed
                       "torch-compile-max-autotune-50", "torch-compile-max-autotune-no-cudagraphs-50",
                       "calibrate-cuda", "roofline"}
    assert all(s[0] == ("skipped" if name in skipped else "failed") for name, s in done.items()), done
    assert all(done[n][4] == "needs full-50, which did not pass" for n in needs)
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# GPU check: FAILED: probe, full-50, jax-warm-50, all-5")
    assert "| parity | failed |" in summary and "unmeasured" in summary.split("## Goals")[1]
    assert "fake failure: -m harness probe" in (out / "logs" / "probe.log").read_text()
    assert "gpu check FAILED" in proc.stdout


def test_the_ensembles_selection_runs_the_probe_and_the_ensemble_steps_alone(tmp_path):
    """--ensembles: the probe, the 64-seed ensemble compiled then trained warm, the scaling benchmark."""
    fake = stand_in(tmp_path, "    exit 0")
    out = tmp_path / "out"
    proc = gpu_check(tmp_path / "data", out, fake, "--ensembles")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {n: s[0] for n, s in steps(out).items()} == {
        "probe": "ok", "ensemble-compile": "ok", "ensemble-64": "ok", "ensemble-scaling": "ok"}
    assert "ensemble of 64, aggregate train samples/s" in (out / "summary.md").read_text()


def test_default_selection_budgets_and_verdicts(tmp_path):
    """The default selection: --full's steps skipped and said so; a step over its budget is stopped and the
    next one starts; `check` exiting 3 (judged nothing) fails; the budgets of the default add up to 460 s
    (and the GPU-only roofline step's 60 s)."""
    fake = stand_in(tmp_path, '    case "$2 $3" in\n'
                              '        "harness probe") exec sleep 60 ;;\n'
                              '        "harness check") echo "not judged" >&2; exit 3 ;;\n'
                              '        *) exit 0 ;;\n'
                              '    esac')
    out = tmp_path / "out"
    t = time.monotonic()
    proc = gpu_check(tmp_path / "data", out, fake, GPU_CHECK_BUDGETS="probe=1")
    assert time.monotonic() - t < 60, "the probe's budget did not stop it"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    done = steps(out)
    assert list(done) == STEPS
    assert done["probe"][0] == "over-budget" and float(done["probe"][1]) < 10 and done["probe"][3] == "1"
    assert done["probe"][4] == "stopped at its budget of 1 s"
    assert done["check"][0] == "failed" and done["check"][2] == "3"
    assert done["check"][4] == "judged nothing (exit 3)"
    for name, s in done.items():
        if name in DEFAULT:
            assert s[0] in ("ok", "failed", "over-budget"), (name, s)
        else:
            gpu_only = name in ("calibrate-cuda", "roofline")
            assert s[0] == "skipped" and s[4] == ("GPU only" if gpu_only else "--full only"), name
    assert 30 + sum(int(done[n][3]) for n in DEFAULT if n != "probe") == 460  # probe's own budget is 30
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# GPU check: FAILED: probe, check")
    assert "Over budget: probe." in summary and "resume (--full only)" in summary
    assert "| check | failed | " in summary and "judged nothing (exit 3)" in summary
    assert "gpu check FAILED: probe check" in proc.stdout


def test_usage_errors():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr and "--full" in proc.stderr
    proc = subprocess.run(["bash", str(SCRIPT), "/nonexistent-data", "/tmp/x"], capture_output=True, text=True)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr


def test_the_summary_shows_the_roofline_and_the_latency_floor(tmp_path):
    """What the roofline step leaves on a GPU (roofline.json, hand-made here: it has never run) turns
    into full-50's latency floor in summary.md, beside the run's roofline."""
    import importlib.util

    from harness.config import RunConfig
    from harness.measurement import measure, results
    from harness.measurement.results import BackendResult, EpochRecord, RunRecord
    spec = importlib.util.spec_from_file_location("gpu_check_helpers", ROOT / "benchmarks" / "gpu_check.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    config = RunConfig(backends=("jax",), device="cuda")
    probe = {"peak_gflops": 50_000.0, "bandwidth_gbps": 4_000.0}
    epochs = [EpochRecord(e, 120.0, {"test_loss": 110.0}, 0.05, 0.01, 1.2e6, 1e6, e * 0.05) for e in (1, 2, 3)]
    r = BackendResult("jax", "cuda", 1, status="ok", epochs=epochs)
    r.summary = measure.summarize([vars(e) for e in epochs], config, 0.5, probe, 60_000)
    (tmp_path / "runs" / "full-50").mkdir(parents=True)
    results.save(RunRecord(config, {}, [r], probe), tmp_path / "runs" / "full-50")
    (tmp_path / "roofline.json").write_text(json.dumps({**probe, "kernel_seconds": 2e-6,
                                                        "kernels_per_step": {"jax": 25.0}}))
    helpers.summary(tmp_path, "cuda")
    text = " ".join((tmp_path / "summary.md").read_text().split())
    assert "- full-50: roofline of one mlp-vae epoch (469 steps, batch 128, float32)" in text
    assert "- jax: 25.0 device operations per step (roofline step)" in text
    assert ("latency floor (CUDA, shown apart): 469 steps x 25.0 kernels per step of jax x 2.00 us per kernel in "
            "a replayed CUDA graph = 0.0234 s/epoch; jax trains an epoch in 0.05 s, 2.13x that") in text
