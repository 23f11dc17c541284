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


def floor_seconds(probe: dict | None, precision: str) -> float | None:
    """The probe's floor for a run of `precision`: a TF32 or bf16 run is held to the floor of its own
    arithmetic, None when that was not probed (a float32 floor would not bound a bf16 run, and a
    TF32 run without its floor falls back to float32's, which TF32 can only beat on a GPU)."""
    if not probe:
        return None
    if precision == "bf16":
        return probe.get("floor_seconds_per_epoch_bf16")
    if precision == "tf32" and probe.get("floor_seconds_per_epoch_tf32"):
        return probe["floor_seconds_per_epoch_tf32"]
    return probe.get("floor_seconds_per_epoch")


def peak_gflops(probe: dict | None, precision: str) -> float | None:
    """The matmul peak a run of `precision` is compared with, by the same rule as its floor."""
    if not probe:
        return None
    if precision == "bf16":
        return probe.get("peak_gflops_bf16")
    return (precision == "tf32" and probe.get("peak_gflops_tf32")) or probe.get("peak_gflops")


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
