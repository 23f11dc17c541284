"""Faults stay inside their backend, interruptions lose nothing, writes are atomic.

Uses real `harness run` subprocesses on a few hundred MNIST samples and the fault-injecting backends
of tests/plugin_backends.py (raise, NaN, os._exit, hang).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import atomic
from harness.execution.child_env import REPEATABLE_BLAS, framework_env
from harness.measurement import results
from tests.conftest import ROOT, SMALL, harness


# Bit-for-bit comparisons of torch runs use one thread: on two, identical torch eager processes
# sometimes differ in the last float32 digits (docs/correctness.md, "Run-to-run repeatability").
ONE_THREAD = ("--threads", "1")


def run_small(out: Path, backends: str, *extra: str, epochs: int = 3) -> subprocess.CompletedProcess:
    return harness("run", "--backends", backends, "--epochs", epochs, "--out", out, *SMALL, *extra)


def by_backend(out: Path) -> dict[str, results.BackendResult]:
    return {r.backend: r for r in results.load(out).results}


def test_diverged_backend_is_recorded_and_others_finish(tmp_path):
    proc = run_small(tmp_path, "fault-nan,torch")
    assert proc.returncode == 1
    r = by_backend(tmp_path)
    assert r["torch"].status == "ok" and len(r["torch"].epochs) == 3
    nan = r["fault-nan"]
    assert nan.status == "diverged" and len(nan.epochs) == 1
    assert "diverged at epoch 2" in nan.error and f"{nan.epochs[0].train_loss}" in nan.error
    assert "fault-nan" in proc.stdout and "diverged" in proc.stdout


@pytest.mark.parametrize("backend, status, fragment, stderr", [
    ("fault-raise", "failed", "exited with code 1", "injected failure in train_epoch"),
    ("fault-exit", "failed", "exited with code 7", None),
])
def test_crashing_backend_is_isolated(tmp_path, backend, status, fragment, stderr):
    proc = run_small(tmp_path, f"{backend},torch")
    assert proc.returncode == 1
    r = by_backend(tmp_path)
    assert r["torch"].status == "ok"
    assert r[backend].status == status and fragment in r[backend].error
    if stderr:
        assert stderr in r[backend].stderr_tail
    if backend == "fault-exit":
        assert len(r[backend].epochs) == 1  # the finished epoch survives the crash


def test_timeout_is_a_failure_not_a_hang(tmp_path):
    start = time.monotonic()
    proc = run_small(tmp_path, "fault-hang,torch", "--timeout", "20")
    assert proc.returncode == 1 and time.monotonic() - start < 120
    r = by_backend(tmp_path)
    assert r["fault-hang"].status == "failed" and "timed out after 20 s" in r["fault-hang"].error
    assert r["torch"].status == "ok"


def test_sigint_keeps_finished_epochs_and_resume_is_bit_identical(tmp_path):
    # slow-torch = torch + 1 s pause per epoch, so the signal surely lands mid-run on a fast machine.
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_small(full, "slow-torch", *ONE_THREAD, epochs=4).returncode == 0

    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--backends", "slow-torch", "--epochs", "4",
                             "--out", cut, *SMALL, *ONE_THREAD], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait for the first finished epoch on disk
        try:
            if by_backend(cut)["slow-torch"].epochs:
                break
        except Exception:
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
    interrupted = by_backend(cut)["slow-torch"]
    assert interrupted.status == "interrupted" and 1 <= len(interrupted.epochs) < 4

    resumed = harness("run", "--resume", cut, "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    a, b = by_backend(full)["slow-torch"], by_backend(cut)["slow-torch"]
    assert b.status == "ok"
    for ea, eb in zip(a.epochs, b.epochs, strict=True):
        assert (ea.train_loss, ea.metrics) == (eb.train_loss, eb.metrics)
    with np.load(full / "slow-torch" / "params.npz") as pa, np.load(cut / "slow-torch" / "params.npz") as pb:
        for k in pa.files:
            np.testing.assert_array_equal(pa[k], pb[k])


def test_force_overwrites_a_previous_run(tmp_path):
    assert run_small(tmp_path, "torch", epochs=1).returncode == 0
    assert run_small(tmp_path, "torch", "--force", epochs=1).returncode == 0


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic.write_json(target, {"old": True})

    def killed(*a, **k):
        raise KeyboardInterrupt  # as if the process died between writing and renaming
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_json(target, {"new": True})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
epoch_records = st.builds(results.EpochRecord, epoch=st.integers(1, 100), train_loss=finite,
                          metrics=st.fixed_dictionaries({"test_loss": finite, "test_loss_sampled": finite}),
                          train_seconds=finite, eval_seconds=finite,
                          samples_per_second=finite, eval_samples_per_second=finite, elapsed_seconds=finite)
backend_results = st.builds(results.BackendResult, backend=st.sampled_from(["torch", "jax", "torch-compile"]),
                            device=st.sampled_from(["cpu", "cuda:0"]), seed=st.integers(0, 2**31),
                            status=st.sampled_from(results.STATUSES), error=st.none() | st.text(max_size=50),
                            epochs=st.lists(epoch_records, max_size=4),
                            compile_seconds=st.none() | finite)


@settings(max_examples=50, deadline=None)
@given(st.lists(backend_results, max_size=4), st.dictionaries(st.text(max_size=8), st.integers(), max_size=3))
def test_results_schema_round_trip(tmp_dir_factory_results, res, config):
    record = results.RunRecord(config=config, environment={"python": "3"}, results=res, command="x")
    results.save(record, tmp_dir_factory_results)
    assert results.load(tmp_dir_factory_results) == record


@pytest.fixture(scope="module")
def tmp_dir_factory_results(tmp_path_factory):
    return tmp_path_factory.mktemp("schema")


def test_repeats_add_timings_but_change_no_number(tmp_path):
    plain, repeated = tmp_path / "plain", tmp_path / "repeated"
    assert run_small(plain, "torch", *ONE_THREAD, epochs=2).returncode == 0
    assert run_small(repeated, "torch", *ONE_THREAD, "--repeats", "3", epochs=2).returncode == 0
    a, b = by_backend(plain)["torch"], by_backend(repeated)["torch"]
    assert len(b.repeat_seconds) == 3 and b.summary["repeats"] == 3 and not a.repeat_seconds
    assert [e.metrics for e in a.epochs] == [e.metrics for e in b.epochs]
    # the numeric settings a torch child records (harness/execution/child_env.py, common.set_denormals)
    assert a.backend_info["mkl_cbwr"] == REPEATABLE_BLAS["MKL_CBWR"]
    assert a.backend_info["denormals"].startswith("flushed to zero")
    with np.load(plain / "torch" / "params.npz") as pa, np.load(repeated / "torch" / "params.npz") as pb:
        for k in pa.files:
            np.testing.assert_array_equal(pa[k], pb[k])


def test_children_get_repeatable_blas_unless_the_user_chose_a_mode():
    assert framework_env({"PATH": "/bin"}) == {"PATH": "/bin", **REPEATABLE_BLAS}
    assert framework_env({"MKL_CBWR": "COMPATIBLE"})["MKL_CBWR"] == "COMPATIBLE"
