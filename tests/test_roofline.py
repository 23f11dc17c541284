"""The floor: which one a run is held to, and 'invalid' instead of a ratio under 1 (harness/measurement/floor.py),
on hand-made records."""
from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from harness.config import RunConfig
from harness.measurement import floor, measure
from harness.measurement.results import BackendResult, EpochRecord, RunRecord
from harness.reporting import console, report

PROBE = {"floor_seconds_per_epoch": 0.081, "floor_seconds_per_epoch_tf32": 0.05, "peak_gflops": 50_000.0}


def result(backend: str, steady: float, probe: dict = PROBE, precision: str = "float32") -> BackendResult:
    """A finished 3-epoch result whose steady epochs took `steady` s, summarised like the runner does."""
    epochs = [EpochRecord(e, 120.0, {"test_loss": 110.0, "test_loss_sampled": 118.0}, steady, 0.01, 60_000 / steady, 1e6, e * steady)
              for e in (1, 2, 3)]
    r = BackendResult(backend, "cuda", 1, status="ok", epochs=epochs, compile_seconds=1.0, compile_cache="warm")
    config = RunConfig(backends=(backend,), device="cuda", precision=precision)
    r.summary = measure.summarize([vars(e) for e in epochs], config, 1.0, probe, 60_000)
    return r


def record(*results: BackendResult) -> RunRecord:
    return RunRecord(config=RunConfig(device="cuda").to_dict(), environment={}, results=list(results), probe=PROBE)


def rendered(table) -> str:
    out = Console(file=io.StringIO(), width=400)
    out.print(table)
    return out.file.getvalue()


def test_floor_seconds_follow_the_precision():
    assert floor.floor_seconds(PROBE, "float32") == 0.081
    assert floor.floor_seconds(PROBE, "tf32") == 0.05
    assert floor.floor_seconds({"floor_seconds_per_epoch": 1.4}, "tf32") == 1.4  # CPU probes have no TF32 floor
    assert floor.floor_seconds(None, "float32") is None
    assert floor.floor_seconds(PROBE, "bf16") is None  # a float32 floor does not bound a bf16 run
    assert floor.floor_seconds({**PROBE, "floor_seconds_per_epoch_bf16": 0.03}, "bf16") == 0.03
    assert floor.peak_gflops(PROBE, "bf16") is None and floor.peak_gflops(PROBE, "tf32") == 50_000.0
    assert floor.peak_gflops({**PROBE, "peak_gflops_bf16": 9e4}, "bf16") == 9e4
    assert result("jax", 0.1, precision="tf32").summary["floor_multiple"] == 0.1 / 0.05


def test_a_valid_floor_shows_ratios():
    rec = record(result("torch", 0.71), result("torch-compile", 0.10))
    assert floor.problem(rec.results) is None
    text = rendered(console.results_table(rec))
    assert "8.77" in text and "1.23" in text and "invalid" not in text
    assert "1.00 (warm)" in text  # compile seconds carry the cache state


def test_a_backend_below_the_floor_invalidates_every_ratio():
    rec = record(result("torch", 0.71), result("jax", 0.047))
    why = floor.problem(rec.results)
    assert why.startswith("floor invalid: jax (cuda) trains an epoch in 0.047 s, below the probe's floor of 0.081 s")
    text = rendered(console.results_table(rec))
    assert "0.58" not in text and "8.77" not in text  # no ratio at all, under 1 or not
    assert text.count("invalid") >= 3 and "floor invalid: jax" in text  # both cells and the caption

    entries = report.load_entries([(Path("runs/gpu"), rec)])
    section = "\n".join(report._summary_section(entries))
    assert "**Floor invalid** (run `runs/gpu`): floor invalid: jax (cuda)" in section
    frame = report.summary_frame(entries)
    assert list(frame["x floor"]) == ["invalid", "invalid"]


def test_multiple_cell():
    assert floor.multiple_cell({}, None) == "-"
    assert floor.multiple_cell({"floor_multiple": 1.234}, None) == "1.23"
    assert floor.multiple_cell({"floor_multiple": 1.234}, "floor invalid: ...") == "invalid"


def test_a_bf16_run_has_no_float32_floor():
    """The probe times float32 products; a bf16 run is not held to (or below) that floor."""
    r = result("torch", 0.5, precision="bf16")
    assert floor.floor_seconds(PROBE, "bf16") is None and "floor_multiple" not in r.summary
