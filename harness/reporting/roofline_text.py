"""The roofline in words: the line under a results table, the report's Ceilings section and the column notes.

The figures come from harness.measurement.roofline; this module only says them.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from harness.measurement import results, roofline
from harness.measurement.results import RunRecord

COLUMNS = ("'x roofline': steady s/epoch over the epoch's roofline, the sum over its steps of max(FLOPs / "
           "measured matrix peak, bytes / measured bandwidth) for this workload, batch size and precision "
           "(see Ceilings; '(compute only)': a probe from before the bandwidth was measured, FLOPs / peak alone; "
           "'invalid' when a backend of the run came out below it; 'not measured': no probe). 'MFU %': the "
           "model's FLOP/s (forward and backward products) over the measured peak of the run's arithmetic. "
           "'x torch products': steady s/epoch over the epoch's matrix products replayed through torch, a "
           "reference that a backend may beat, not a bound.")


def roofline_line(record: RunRecord) -> str | None:
    """One sentence: the run's roofline and its ceilings, or why the run has none."""
    roof = roofline.epoch_roofline(record.config, record.probe)
    cfg = record.config
    if roof is None:
        why = "no probe" if not record.probe else f"the probe has no {cfg.precision} peak"
        return f"roofline: not measured ({why})"
    memory = ("no bandwidth in this probe, so compute only" if roof.memory_seconds is None else
              f"memory {roof.memory_seconds:.3g} s at {roof.bandwidth_gbps:,.1f} GB/s")
    return (f"roofline of one {cfg.model.workload} epoch ({roof.steps} steps, batch {cfg.model.batch_size}, "
            f"{cfg.precision}): {roof.seconds:.3g} s (compute {roof.compute_seconds:.3g} s at "
            f"{roof.peak_gflops:,.1f} GFLOP/s; {memory})")


def latency_line(record: RunRecord) -> str | None:
    """The CUDA latency floor of the run's fastest counted engine, or why there is none (None on CPUs)."""
    if not record.config.device.startswith("cuda"):
        return None
    floor = roofline.latency_floor(record)
    if floor is None:
        return ("latency floor: not measured (the probe counts kernels only with `harness probe "
                "--count-kernels`, a step of benchmarks/gpu_check.sh)")
    return (f"latency floor (CUDA, shown apart): {floor['steps']} steps x {floor['kernels_per_step']:.1f} "
            f"kernels per step of {floor['backend']} x {floor['kernel_seconds'] * 1e6:.2f} us per kernel in a "
            f"replayed CUDA graph = {floor['seconds']:.3g} s/epoch")


def ceilings_section(loaded: list[tuple[Path, RunRecord]]) -> list[str]:
    """The report's Ceilings section: for every run with a probe, its roofline and how each ceiling was
    measured, then the whole probe record."""
    lines: list[str] = []
    for d, rec in loaded:
        if not rec.probe:
            continue
        p = rec.probe
        lines += [f"Run `{d}`:", "", f"- {roofline_line(rec)}"]
        lines.append(f"- matrix peak: {p.get('peak_method') or _old_peak_method(p)}")
        if p.get("bandwidth_method"):
            lines.append(f"- bandwidth: {p['bandwidth_method']}; {p['bandwidth_working_set_gbps']:,.1f} GB/s on "
                         f"{p['bandwidth_working_set_bytes']:,} bytes (the step's working set), "
                         f"{p['bandwidth_large_gbps']:,.1f} GB/s on {p['bandwidth_large_bytes']:,} bytes")
        else:
            lines.append("- bandwidth: not measured (a probe from before the roofline)")
        if latency := latency_line(rec):
            lines.append(f"- {latency}")
        lines += ["", "```text", *(f"{k}: {_show(v)}" for k, v in p.items() if v not in (None, [], {}, "")),
                  "```", ""]
    if not lines:
        return []
    return ["## Ceilings", "", "Measured on the run's device, threads and precision before the run "
            "(harness probe); the roofline is a lower bound on every backend's epoch.", "", *lines]


def _old_peak_method(p: dict) -> str:
    """How a probe from before the roofline measured its peak (backends/torch/probe.py at the time)."""
    return (f"torch.mm of two {p.get('peak_matmul_size', '?')}^2 matrices, best of "
            f"{p.get('floor_repeats', '?')} (a probe from before the roofline)")


def _show(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_show(x)}" for k, x in v.items())
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def sweep_section(state, sweep_dir: Path) -> str:
    """The sweep report's roofline table: per backend, device and latent size, the median x roofline and
    MFU over its seeds, from each job's own record (its probe, if the job ran one)."""
    groups: dict[tuple, list[dict]] = {}
    for job in state.jobs:
        if job.status != "ok":
            continue
        rec = results.load(Path(sweep_dir) / job.run_dir)
        invalid = roofline.problem(rec)
        for r in rec.results:
            fig = roofline.figures(rec.config, rec.probe, r.summary, roofline.members(r))
            groups.setdefault((job.backend, job.device, job.latent_dim), []).append({**fig, "invalid": invalid})
    if not groups:
        return "## Roofline\n\nNo job finished ok yet.\n"
    rows = ["| backend | device | latent | jobs | x roofline (median) | MFU % (median) |", "|---|---|---|---|---|---|"]
    for (backend, device, latent), figs in sorted(groups.items()):
        ratios = [f["roofline_multiple"] for f in figs if "roofline_multiple" in f]
        mfus = [100 * f["fraction_of_peak"] for f in figs if "fraction_of_peak" in f]
        ratio = "invalid" if any(f["invalid"] for f in figs) else _median(ratios, ".2f")
        rows.append(f"| {backend} | {device} | {latent} | {len(figs)} | {ratio} | "
                    f"{_median(mfus, '.1f')} |")
    return ("## Roofline\n\nx roofline and MFU as in a run's report (harness/measurement/roofline.py), from "
            "each job's probe; 'invalid' where a job came out below its roofline; 'not measured' where the jobs "
            "ran without a probe (sweep jobs do not probe yet).\n\n"
            + "\n".join(rows) + "\n")


def _median(values: list[float], spec: str) -> str:
    return format(statistics.median(values), spec) if values else "not measured"
