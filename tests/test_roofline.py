"""The roofline (harness/measurement/roofline.py) on hand-made records: which ceilings a run is held to,
the sum over full and partial batches, the run's own batch size, workload and precision, 'invalid'
instead of a ratio under 1, the compute-only roofline of old probes and the CUDA latency floor."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from harness.config import ModelConfig, RunConfig
from harness.measurement import measure, roofline
from harness.measurement.results import BackendResult, EpochRecord, RunRecord
from harness.reporting import console, report

# Ceilings chosen so that the roofline is easy to check by hand: 100 GFLOP/s and 10 GB/s.
PROBE = {"peak_gflops": 100.0, "bandwidth_gbps": 10.0, "floor_seconds_per_epoch": 5.0,
         "floor_seconds_per_epoch_tf32": 4.0}
OLD_PROBE = {"peak_gflops": 100.0, "floor_seconds_per_epoch": 5.0}  # before the bandwidth existed


def config(device: str = "cpu", precision: str = "float32", **model) -> RunConfig:
    return RunConfig(device=device, precision=precision, model=ModelConfig(**model))


def result(backend: str, steady: float, cfg: RunConfig, probe: dict | None = PROBE) -> BackendResult:
    """A finished 3-epoch result whose steady epochs took `steady` s, summarised like the runner does."""
    epochs = [EpochRecord(e, 120.0, {"test_loss": 110.0, "test_loss_sampled": 118.0}, steady, 0.01,
                          60_000 / steady, 1e6, e * steady) for e in (1, 2, 3)]
    r = BackendResult(backend, cfg.device, 1, status="ok", epochs=epochs, compile_seconds=1.0, compile_cache="warm")
    r.summary = measure.summarize([vars(e) for e in epochs], cfg, 1.0, probe, 60_000)
    return r


def record(cfg: RunConfig, *steady: tuple[str, float], probe: dict | None = PROBE) -> RunRecord:
    return RunRecord(config=cfg, environment={}, results=[result(b, s, cfg, probe) for b, s in steady], probe=probe)


def rendered(table) -> str:
    out = Console(file=io.StringIO(), width=400)
    out.print(table)
    return out.file.getvalue()


def by_hand(cfg: RunConfig, peak: float, bandwidth: float | None) -> float:
    m, spec = cfg.model, cfg.model.spec()
    return sum(max(spec.step_flops(m, b) / (peak * 1e9), spec.step_bytes(m, b) / (bandwidth * 1e9) if bandwidth else 0)
               for b in m.batch_sizes(cfg.train_limit or 60_000))


def test_the_work_of_a_step_counted_by_hand():
    m = ModelConfig()
    spec = m.spec()
    # 784*400+400 + 2*(400*20+20) + 20*400+400 + 400*784+784 parameters
    assert spec.n_params(m) == 652_824
    assert spec.step_flops(m, 128) == 128 * 3_280_000 + 13 * 652_824 == 428_326_712
    assert spec.step_bytes(m, 128) == 2 * 3 * 4 * 652_824 + 128 * (784 + 20) * 4 == 16_079_424
    assert spec.bandwidth_working_set(m, 128) == 3 * 4 * 652_824 + 128 * (784 + 20) * 4
    conv = ModelConfig(workload="conv-vae")
    assert conv.spec().n_params(conv) == 181_193
    assert conv.spec().step_flops(conv, 128) == 128 * 33_366_912 + 13 * 181_193


def test_the_epoch_roofline_sums_full_and_partial_batches():
    cfg = config()
    roof = roofline.epoch_roofline(cfg, PROBE)
    assert roof.steps == 469 and roof.kind == "roofline"  # 468 batches of 128 and one of 96
    assert roof.seconds == pytest.approx(by_hand(cfg, 100.0, 10.0))
    assert roof.seconds == pytest.approx(max(roof.compute_seconds, roof.memory_seconds))  # one bound rules here
    slow_memory = {**PROBE, "bandwidth_gbps": 0.01}  # now the bytes bound every step
    assert roofline.epoch_roofline(cfg, slow_memory).seconds == pytest.approx(
        roofline.epoch_roofline(cfg, slow_memory).memory_seconds)


def test_a_batch_512_run_is_held_to_the_batch_512_roofline():
    small, large = config(), config(batch_size=512)
    roof = roofline.epoch_roofline(large, PROBE)
    assert roof.steps == 118  # 117 x 512 + 96
    assert roof.seconds == pytest.approx(by_hand(large, 100.0, 10.0))
    assert roof.seconds != pytest.approx(roofline.epoch_roofline(small, PROBE).seconds)


def test_a_conv_run_and_a_bf16_run_get_their_own_roofline():
    conv = config(workload="conv-vae")
    assert roofline.epoch_roofline(conv, PROBE).seconds == pytest.approx(by_hand(conv, 100.0, 10.0))
    bf16 = config(precision="bf16")
    assert roofline.epoch_roofline(bf16, PROBE) is None  # a float32 peak bounds no bf16 run
    with_bf16 = {**PROBE, "peak_gflops_bf16": 400.0}
    assert roofline.epoch_roofline(bf16, with_bf16).seconds == pytest.approx(by_hand(bf16, 400.0, 10.0))
    r = result("torch", 3.0, bf16, with_bf16)
    assert r.summary["roofline_multiple"] == pytest.approx(3.0 / by_hand(bf16, 400.0, 10.0))
    assert r.summary["fraction_of_peak"] == pytest.approx(60_000 * 3_280_000 / 3.0 / 400e9)
    assert "roofline_multiple" not in result("torch", 3.0, bf16).summary


def test_a_valid_roofline_shows_ratios_mfu_and_the_products_reference():
    cfg = config()
    rec = record(cfg, ("torch", 8.0), ("torch-compile", 4.0))
    assert roofline.problem(rec) is None
    roof = roofline.epoch_roofline(cfg, PROBE).seconds
    text = rendered(console.results_table(rec))
    assert f"{8.0 / roof:.2f}" in text and f"{4.0 / roof:.2f}" in text and "invalid" not in text
    assert f"{100 * 196.8 / 4.0 / 100.0:.1f}" in text  # MFU: 196.8 GFLOP per epoch in 4 s at 100 GFLOP/s
    frame = report.summary_frame(report.load_entries([(Path("runs/cpu"), rec)]))
    assert list(frame["x torch products"]) == ["1.60", "0.80"]  # a reference: below 1 is allowed


def test_a_record_below_the_roofline_is_flagged():
    cfg = config(device="cuda")
    roof = roofline.epoch_roofline(cfg, PROBE).seconds
    rec = record(cfg, ("torch", 8.0), ("jax", roof / 2))
    why = roofline.problem(rec)
    assert why.startswith(f"roofline invalid: jax (cuda) trains an epoch in {roof / 2:.3g} s, below the roofline")
    text = rendered(console.results_table(rec))
    assert f"{8.0 / roof:.2f}" not in text and "0.50" not in text  # no ratio at all, under 1 or not
    assert text.count("invalid") >= 3  # both cells and the caption
    entries = report.load_entries([(Path("runs/gpu"), rec)])
    assert "**Roofline invalid** (run `runs/gpu`): roofline invalid: jax (cuda)" in "\n".join(
        report._summary_section(entries))
    assert list(report.summary_frame(entries)["x roofline"]) == ["invalid", "invalid"]


def test_an_old_probe_gives_a_compute_only_roofline_and_no_probe_none():
    cfg = config()
    roof = roofline.epoch_roofline(cfg, OLD_PROBE)
    assert roof.kind == roofline.COMPUTE_ONLY and roof.memory_seconds is None
    assert roof.seconds == pytest.approx(by_hand(cfg, 100.0, None))
    frame = report.summary_frame(report.load_entries([(Path("old"), record(cfg, ("jax", 4.0), probe=OLD_PROBE))]))
    assert list(frame["x roofline"]) == [f"{4.0 / roof.seconds:.2f} (compute only)"]
    frame = report.summary_frame(report.load_entries([(Path("none"), record(cfg, ("jax", 4.0), probe=None))]))
    assert list(frame["x roofline"]) == ["not measured"] and list(frame["MFU %"]) == ["not measured"]


def test_the_latency_floor_counts_the_fastest_counted_engine():
    cfg = config(device="cuda")
    probe = {**PROBE, "kernel_seconds": 2e-6, "kernels_per_step": {"jax": 30.0, "torch": 90.0}}
    rec = record(cfg, ("torch", 8.0), ("jax", 4.0), probe=probe)
    floor = roofline.latency_floor(rec)
    assert floor["backend"] == "jax" and floor["seconds"] == pytest.approx(469 * 30.0 * 2e-6)
    assert roofline.latency_floor(record(cfg, ("jax", 4.0))) is None  # never counted: no floor
    caption = " ".join(rendered(console.results_table(rec)).split())  # the caption wraps
    assert "latency floor (CUDA, shown apart): 469 steps x 30.0 kernels per step of jax x 2.00 us" in caption


def test_an_ensembles_epoch_is_held_to_its_seeds_rooflines():
    """An ensemble of 4 trains 4 seeds per epoch: its roofline is 4 times one seed's, its MFU counts all 4."""
    cfg = RunConfig(seeds=(1, 2, 3, 4), ensemble=True)
    roof = roofline.epoch_roofline(cfg, PROBE).seconds
    rec = record(cfg, ("torch", 3 * roof))
    r = rec.results[0]
    assert "roofline_multiple" not in r.summary  # the size is not known while it runs: the reports use it
    r.backend_info = {"ensemble": {"size": 4}}
    fig = roofline.figures(cfg, PROBE, r.summary, roofline.members(r))
    assert fig["roofline_multiple"] == pytest.approx(0.75) and roofline.problem(rec).startswith("roofline invalid")
    assert fig["fraction_of_peak"] == pytest.approx(4 * 196.8 / (3 * roof) / 100.0)


def test_cells():
    fig = {"roofline_multiple": 1.234, "roofline_kind": "roofline", "fraction_of_peak": 0.5}
    steady = {"steady_seconds_per_epoch": 1.0}
    assert roofline.multiple_cell({}, {}, None) == "-"
    assert roofline.multiple_cell(steady, {}, None) == "not measured"
    assert roofline.multiple_cell(steady, fig, None) == "1.23"
    assert roofline.multiple_cell(steady, fig, "roofline invalid: ...") == "invalid"
    assert roofline.mfu_cell(steady, fig) == "50.0" and roofline.mfu_cell(steady, {}) == "not measured"


def test_the_tf32_ceilings_follow_the_precision():
    assert roofline.products_seconds(PROBE, "tf32") == 4.0 and roofline.products_seconds(PROBE, "float32") == 5.0
    assert roofline.peak_gflops({**PROBE, "peak_gflops_tf32": 300.0}, "tf32") == 300.0
    assert roofline.peak_gflops(PROBE, "tf32") == 100.0  # CPU probes have no TF32 peak
    assert roofline.peak_gflops(None, "float32") is None


def test_a_run_keeps_the_best_ceiling_of_its_two_probes():
    """A busy moment in one probe must not lower a ceiling: the higher rate and the lower kernel cost win."""
    from harness.measurement.roofline import best_ceilings
    before = {"peak_gflops": 100.0, "bandwidth_gbps": 50.0, "kernel_seconds": 3e-6, "floor_seconds_per_epoch": 1.0}
    after = {"peak_gflops": 150.0, "bandwidth_gbps": 40.0, "kernel_seconds": 2e-6, "floor_seconds_per_epoch": 0.5}
    best = best_ceilings(before, after)
    assert (best["peak_gflops"], best["bandwidth_gbps"], best["kernel_seconds"]) == (150.0, 50.0, 2e-6)
    assert best["floor_seconds_per_epoch"] == 1.0 and best["ceiling_probes"] == 2  # the reference is the first's
    assert best_ceilings(before, None) is before
