"""`harness parity --out DIR` writes parity.json and parity.md that can be read back.

Kept fast: 3 teacher-forced steps of two torch backends, each in its own child process.
"""
from __future__ import annotations

import json

from harness import cli
from harness.config import ModelConfig
from harness.reporting import parity_report
from harness.verification import parity
from tests.conftest import harness


def test_parity_out_writes_readable_artifacts(tmp_path, mnist):
    out = tmp_path / "parity"
    rc = cli.main(["parity", "--steps", "3", "--backends", "torch-reference,torch", "--threads", "1",
                   "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "parity.json").read_text())
    assert doc == parity_report.load(out)
    assert doc["steps"] == 3 and doc["seed"] == 1 and doc["passed"] is True
    assert doc["tolerances"] == {"STEP_RTOL": parity.STEP_RTOL, "KINK_BUDGET": parity.KINK_BUDGET,
                                 "LOSS_RTOL": parity.LOSS_RTOL, "KINK_STEP_RATE": parity.KINK_STEP_RATE,
                                 "allowed_kink_steps": parity.allowed_kink_steps(3)}
    assert doc["config"]["threads"] == 1 and doc["config"]["backends"] == ["torch-reference", "torch"]
    assert doc["environment"]["packages"]["numpy"] and "torch" in doc["frameworks"]
    assert [b["backend"] for b in doc["backends"]] == ["torch-reference", "torch"]
    for b in doc["backends"]:
        assert b["ok"] is True
        assert set(b["worst_rel_err"]) == set(ModelConfig().param_order()) == set(b["free_running_rel_err"])
        assert len(b["outliers_per_step"]) == 3 and b["worst_step_outliers"] == max(b["outliers_per_step"])
        assert 0 <= b["max_loss_rel_err"] <= parity.LOSS_RTOL
    md = (out / "parity.md").read_text()
    assert "torch-reference" in md and "| fc1.weight |" in md and "all backends agree" in md
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files behind


def test_parity_out_unwritable_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    from tests.conftest import assert_one_line_error
    assert_one_line_error(harness("parity", "--steps", "1", "--backends", "torch", "--out", blocker / "x",
                                  timeout=120), "cannot write to --out folder")


def test_a_backend_that_dies_in_parity_costs_only_its_own_result(tmp_path):
    """Each backend's parity runs in its own child: one that exits abruptly leaves one error line, the
    other backend's verdict and a parity.json that names the failure."""
    out = tmp_path / "parity"
    proc = harness("parity", "--steps", "2", "--backends", "fault-exit-parity,torch", "--threads", "1",
                   "--out", out)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fault-exit-parity" in errors[0] and "exited with code 9" in errors[0], errors
    doc = json.loads((out / "parity.json").read_text())
    assert [b["backend"] for b in doc["backends"]] == ["torch"] and doc["backends"][0]["ok"]
    assert doc["failed"][0]["backend"] == "fault-exit-parity" and not doc["passed"]
    assert "Traceback" not in proc.stdout + proc.stderr
