"""Bad input gets one clear error line and a non-zero exit, never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.execution import devices
from harness.measurement import results
from tests.conftest import ROOT, SMALL, assert_one_line_error, harness


def test_core_imports_no_framework():
    code = ("import harness.cli, harness.execution.runner, harness.reporting.report, harness.verification.check, sys;"
            "bad = {'torch', 'jax'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# On a GPU host `--device cuda` is valid and would start real runs: these cases need a machine without
# one (test_devices covers the same checks with the detection mocked; a GPU host gets
# test_cuda_index_beyond_the_gpus_is_one_line instead).
WITHOUT_GPU = pytest.mark.skipif(devices.gpu_visible(), reason="an NVIDIA GPU is visible: --device cuda is valid here")


@pytest.mark.parametrize("args, fragment", [
    (["run", "--backends", "nope"], "unknown backend 'nope'; known backends: torch"),
    (["run", "--device", "tpu"], "unknown device 'tpu'"),
    pytest.param(["run", "--device", "cuda"], "no NVIDIA GPU", marks=WITHOUT_GPU),
    pytest.param(["run", "--device", "cuda:0"], "no NVIDIA GPU", marks=WITHOUT_GPU),
    (["run", "--epochs", "0"], "--epochs: '0' is not a positive integer"),
    (["run", "--epochs", "-3"], "not a positive integer"),
    (["run", "--epochs", "two"], "'two' is not an integer"),
    (["run", "--batch-size", "0"], "--batch-size: '0' is not a positive integer"),
    (["run", "--seed", "x"], "--seed"),
    (["run", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["calibrate", "--seeds", "1-x"], "is not a seed list"),
    (["check", "--profile", "nope"], "unknown profile 'nope'"),
    (["report", "/nonexistent-run"], "no results.json"),
    (["compare", "/nonexistent-a", "/nonexistent-b"], "no results.json"),
    (["run", "--resume", "/nonexistent-run"], "no results.json there to resume"),
])
def test_bad_input_is_one_line(args, fragment):
    assert_one_line_error(harness(*args, timeout=60), fragment)


@pytest.mark.skipif(not devices.gpu_visible(), reason="needs a visible NVIDIA GPU (without one, see above)")
def test_cuda_index_beyond_the_gpus_is_one_line():
    """The GPU host's counterpart of the 'no NVIDIA GPU' cases: a device index no framework sees (or, with
    CPU-only builds, the build) is one error line before anything trains."""
    proc = harness("run", "--backends", "torch", "--device", "cuda:99", timeout=120)
    assert_one_line_error(proc, "device 'cuda:99'")


def test_output_folder_with_another_run_is_refused(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    assert_one_line_error(harness("run", "--backends", "torch", "--out", tmp_path, *SMALL),
                          "already holds a run", "--resume", "--force")


def test_unwritable_output_folder():
    assert_one_line_error(harness("run", "--backends", "torch", "--out", "/proc/vae-bench", *SMALL),
                          "cannot write to output folder")


def test_newer_schema_is_refused(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 99, "config": {}}))
    for args in (["report", tmp_path], ["run", "--resume", tmp_path]):
        assert_one_line_error(harness(*args), "schema_version 99 is newer")


@pytest.mark.parametrize("damage", ["missing", "truncated", "wrong-magic", "checksum"])
def test_bad_data_folder(tmp_path, mnist, damage):
    from harness import data
    for key, (fname, _, _) in data.FILES.items():
        raw = (mnist.directory / f"{fname}.gz").read_bytes()
        (tmp_path / f"{fname}.gz").write_bytes(raw)
    victim = tmp_path / f"{data.FILES['test_labels'][0]}.gz"
    import gzip
    content = gzip.decompress(victim.read_bytes())
    if damage == "missing":
        victim.unlink()
    elif damage == "truncated":
        victim.write_bytes(gzip.compress(content[:-100]))
    elif damage == "wrong-magic":
        victim.write_bytes(gzip.compress(b"\x00\x00\x09\x09" + content[4:]))
    else:
        victim.write_bytes(gzip.compress(content[:-1] + bytes([(content[-1] + 1) % 10])))
    proc = harness("run", "--backends", "torch", "--data-dir", tmp_path, "--out", tmp_path / "run", *SMALL)
    assert_one_line_error(proc, "t10k-labels")


def test_engine_options_are_recorded_and_checked(tmp_path):
    """--engine-option reaches the engine and the record; an unknown option or value is one line."""
    out = tmp_path / "run"
    proc = harness("run", "--backends", "jax", "--epochs", "1", "--engine-option", "jax.epoch=loop", *SMALL,
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    record = results.load(out)
    assert record.config.engine_options == {"jax": {"epoch": "loop"}}
    assert record.results[0].backend_info["arrangement"] == "jit-step-loop"
    assert_one_line_error(harness("run", "--backends", "jax", "--engine-option", "jax.epoch=sideways", *SMALL,
                                  "--out", tmp_path / "bad"), "jax epoch 'sideways'", "auto, scan, loop")
    assert_one_line_error(harness("run", "--backends", "jax", "--engine-option", "jax.speed=11", *SMALL,
                                  "--out", tmp_path / "bad2"), "no option 'speed'")
    assert_one_line_error(harness("run", "--engine-option", "nonsense", *SMALL), "BACKEND.OPTION=VALUE")


def test_an_engine_option_for_a_backend_not_trained_is_one_line(tmp_path):
    assert_one_line_error(harness("run", "--backends", "torch", "--engine-option", "jax.epoch=loop", *SMALL,
                                  "--out", tmp_path / "r"), "jax", "does not train")
