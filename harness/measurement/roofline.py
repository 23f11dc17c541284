"""The per-epoch floor a run is held to, and whether it held.

The probe (harness.execution.probe) times the matrix products of one training epoch; a backend's steady s/epoch
divided by it says how much time goes to everything else. That reading needs the floor to be a lower
bound. If any backend of a run trains an epoch faster than the floor, the probe measured something
other than the arithmetic (launch overhead, say) and every ratio of that run is meaningless: tables
then say "invalid" and why, rather than showing a ratio under 1.
"""
from __future__ import annotations

from collections.abc import Iterable

from harness.measurement.results import BackendResult


def _of_precision(probe: dict | None, precision: str, key: str) -> float | None:
    """The probe's `key` figure for a run of `precision`: a TF32 or bf16 run is held to the figure of its
    own arithmetic; None when a bf16 one was not probed (a float32 figure would not bound a bf16 run),
    float32's when a TF32 one was not (TF32 can only beat it on a GPU)."""
    if not probe:
        return None
    if precision == "bf16":
        return probe.get(f"{key}_bf16")
    return (precision == "tf32" and probe.get(f"{key}_tf32")) or probe.get(key)


def floor_seconds(probe: dict | None, precision: str) -> float | None:
    """The floor (seconds per epoch of the products alone) a run of `precision` is held to."""
    return _of_precision(probe, precision, "floor_seconds_per_epoch")


def peak_gflops(probe: dict | None, precision: str) -> float | None:
    """The matmul peak a run of `precision` is compared with, by the same rule as its floor."""
    return _of_precision(probe, precision, "peak_gflops")


def problem(results: Iterable[BackendResult]) -> str | None:
    """Why the floor of one run is invalid (a backend steadily below it), or None when it held."""
    below = [r for r in results if (r.summary or {}).get("floor_multiple") is not None
             and r.summary["floor_multiple"] < 1.0]
    if not below:
        return None
    parts = []
    for r in below:
        steady = r.summary["steady_seconds_per_epoch"]
        parts.append(f"{r.backend} ({r.device}) trains an epoch in {steady:.3g} s, below the probe's floor of "
                     f"{steady / r.summary['floor_multiple']:.3g} s")
    return ("floor invalid: " + "; ".join(parts) + ". The probe's matrix products are no lower bound on this "
            "device, so no 'x floor' ratio is shown")


def multiple_cell(summary: dict | None, invalid: str | None) -> str:
    """The 'x floor' cell: the ratio, 'invalid' when the run's floor did not hold, '-' when absent."""
    value = (summary or {}).get("floor_multiple")
    if value is None:
        return "-"
    return "invalid" if invalid else f"{value:.2f}"
