"""`harness parity --out DIR` writes parity.json and parity.md that can be read back.

Kept fast: 3 teacher-forced steps of two torch backends, in-process.
"""
from __future__ import annotations

import json

from harness import cli
from harness.config import ModelConfig
from harness.reporting import parity_report
from harness.verification import parity


def test_parity_out_writes_readable_artifacts(tmp_path, mnist):
    out = tmp_path / "parity"
    rc = cli.main(["parity", "--steps", "3", "--backends", "torch-reference,torch", "--threads", "1",
                   "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "parity.json").read_text())
    assert doc == parity_report.load(out)
    assert doc["steps"] == 3 and doc["seed"] == 1 and doc["passed"] is True
    assert doc["tolerances"] == {"STEP_RTOL": parity.STEP_RTOL, "KINK_BUDGET": parity.KINK_BUDGET,
                                 "LOSS_RTOL": parity.LOSS_RTOL}
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
    from tests.conftest import assert_one_line_error, harness
    assert_one_line_error(harness("parity", "--steps", "1", "--backends", "torch", "--out", blocker / "x",
                                  timeout=120), "cannot write to --out folder")
