"""A sweep's statistical summary: the rows it is computed from, the metrics it covers, how its intervals read.

harness/measurement/stats.py computes the summary from `summary_rows`; the sweep's console table
(harness/cli/sweep.py) and its report (harness/reporting/sweep_report.py) print it with `fmt_ci`.
"""
from __future__ import annotations

from typing import Any

from harness.sweeps.state import SweepJob, SweepSpec


def summary_rows(jobs: list[SweepJob]) -> list[dict[str, Any]]:
    """The inputs of stats.summarize: one row per job that finished ok, its final metrics as columns."""
    keep = ("backend", "device", "latent_dim", "seed", "samples_per_second", "throughput_basis")
    return [{**{k: getattr(j, k) for k in keep}, **j.metrics} for j in jobs
            if j.status == "ok" and j.metrics and j.samples_per_second is not None]


def metric_names(spec: SweepSpec) -> tuple[str, ...]:
    """The test metrics the sweep's workload reports (the first is the primary one): its base config's,
    which every job's config, and so every job's results file, shares."""
    return spec.base.model.spec().metric_names


def ci_triple(entry: dict[str, Any], point: str, prefix: str) -> tuple[float | None, float | None, float | None]:
    """(estimate, low, high) of one summary entry's `point` field and its `prefix`_ci_low/high fields."""
    return entry[point], entry[f"{prefix}_ci_low"], entry[f"{prefix}_ci_high"]


def fmt_ci(mean: float | None, low: float | None, high: float | None, spec: str = ".2f", unit: str = "") -> str:
    """'119.83 (119.10–120.55)', or the mean alone when there is no interval (one seed).

    An en dash separates the bounds, so that a negative bound still reads right.
    """
    if mean is None:
        return "-"
    if low is None or high is None:
        return f"{mean:{spec}}{unit}"
    return f"{mean:{spec}}{unit} ({low:{spec}}–{high:{spec}})"
