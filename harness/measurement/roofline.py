"""The roofline a run is held to, each backend's `x roofline` and MFU, and whether the roofline held.

The roofline model (Williams, Waterman, Patterson, CACM 2009) with ceilings measured in the run, as
the Empirical Roofline Toolkit measures them: the probe (harness.execution.probe) records the matrix
peak of the run's arithmetic and the memory bandwidth at the step's working set. One step on B samples
cannot take less than max(FLOPs / peak, bytes / bandwidth), with FLOPs and bytes as the workload
declares them (workloads/spec.py); the epoch's roofline is the sum over its steps, the partial last
batch included. `x roofline` = steady s/epoch over it; MFU = the model's FLOPs per second (forward and
backward products, as torchtitan and MaxText count them) over the peak.

Both ceilings are measured, so no backend can beat the roofline: if one does, a ceiling measurement is
wrong, and the tables say "invalid" and why instead of a ratio under 1. A probe recorded before the
bandwidth existed gives a compute-only roofline (FLOPs / peak: still a lower bound), labelled so.

On CUDA the latency floor is shown apart: steps x the kernels per step of the run's fastest engine (the
probe counts them when asked, `harness probe --count-kernels`) x one kernel's cost in a replayed CUDA
graph. The "torch products" time (the epoch's matrix products replayed through torch) stays as a
labelled reference; a backend may beat it (XLA did on the H200), so it bounds nothing. An ensemble's
epoch trains its N seeds at once, so its roofline is N times one seed's (`members`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from harness.config import TRAIN_SIZE, RunConfig
from harness.measurement.results import BackendResult, RunRecord

COMPUTE_ONLY = "compute-only"


@dataclass(frozen=True)
class Roofline:
    """One epoch's roofline and what it is made of (seconds per epoch)."""

    seconds: float
    compute_seconds: float   # sum over steps of FLOPs / peak
    memory_seconds: float | None  # sum over steps of bytes / bandwidth; None without a measured bandwidth
    peak_gflops: float
    bandwidth_gbps: float | None
    steps: int

    @property
    def kind(self) -> str:
        return "roofline" if self.bandwidth_gbps else COMPUTE_ONLY


def _of_precision(probe: dict | None, precision: str, key: str) -> float | None:
    """The probe's `key` figure for a run of `precision`: a TF32 or bf16 run is held to the figure of its
    own arithmetic; None when a bf16 one was not probed (a float32 figure would not bound a bf16 run),
    float32's when a TF32 one was not (TF32 can only beat it on a GPU)."""
    if not probe:
        return None
    if precision == "bf16":
        return probe.get(f"{key}_bf16")
    return (precision == "tf32" and probe.get(f"{key}_tf32")) or probe.get(key)


def peak_gflops(probe: dict | None, precision: str) -> float | None:
    """The matrix peak a run of `precision` is held to."""
    return _of_precision(probe, precision, "peak_gflops")


def products_seconds(probe: dict | None, precision: str) -> float | None:
    """The "torch products" reference of a run of `precision` (stored as the probe's floor_* keys)."""
    return _of_precision(probe, precision, "floor_seconds_per_epoch")


def n_train(config: RunConfig) -> int:
    return config.train_limit or TRAIN_SIZE


def epoch_roofline(config: RunConfig, probe: dict | None) -> Roofline | None:
    """The roofline of one epoch of `config` under `probe`'s ceilings; None without a peak."""
    peak = peak_gflops(probe, config.precision)
    if not peak:
        return None
    bandwidth = probe.get("bandwidth_gbps")
    m, spec = config.model, config.model.spec()
    compute = memory = total = 0.0
    sizes = Counter(m.batch_sizes(n_train(config)))
    for batch, count in sizes.items():
        c = spec.step_flops(m, batch) / (peak * 1e9)
        b = spec.step_bytes(m, batch) / (bandwidth * 1e9) if bandwidth else 0.0
        compute, memory, total = compute + count * c, memory + count * b, total + count * max(c, b)
    return Roofline(total, compute, memory if bandwidth else None, peak, bandwidth, sum(sizes.values()))


def members(result: BackendResult) -> int:
    """How many seeds the result's timed epochs trained at once: an ensemble's size (its record's
    backend_info says it once the ensemble finished), else 1."""
    return int(((result.backend_info or {}).get("ensemble") or {}).get("size") or 1)


def figures(config: RunConfig, probe: dict | None, summary: dict | None, seeds: int = 1) -> dict:
    """A backend's roofline figures from its steady s/epoch, which trained `seeds` seeds at once (an
    ensemble: `seeds` times the work): roofline_seconds_per_epoch, roofline_kind, roofline_multiple,
    fraction_of_peak (MFU) and floor_multiple (x torch products, one seed's); {} when absent."""
    steady = (summary or {}).get("steady_seconds_per_epoch")
    roof = epoch_roofline(config, probe)
    if not steady or roof is None:
        return {}
    m = config.model
    flops = seeds * m.spec().train_flops_per_sample(m) * n_train(config)
    out = {"roofline_seconds_per_epoch": seeds * roof.seconds, "roofline_kind": roof.kind,
           "roofline_multiple": steady / (seeds * roof.seconds),
           "fraction_of_peak": flops / steady / 1e9 / roof.peak_gflops}
    if products := products_seconds(probe, config.precision):
        out["floor_multiple"] = steady / (seeds * products)  # the old name of "x torch products"
    return out


def latency_floor(record: RunRecord) -> dict | None:
    """CUDA: {seconds, backend, kernels_per_step, kernel_seconds, steps} for the run's fastest engine
    whose kernels the probe counted; None where the probe has no kernel cost or count."""
    probe = record.probe or {}
    counts, cost = probe.get("kernels_per_step") or {}, probe.get("kernel_seconds")
    timed = sorted((r.summary["steady_seconds_per_epoch"], r.backend) for r in record.results
                   if r.backend in counts and (r.summary or {}).get("steady_seconds_per_epoch"))
    if not cost or not timed:
        return None
    backend = timed[0][1]
    steps = len(record.config.model.batch_sizes(n_train(record.config)))
    return {"seconds": steps * counts[backend] * cost, "backend": backend, "kernels_per_step": counts[backend],
            "kernel_seconds": cost, "steps": steps}


def problem(record: RunRecord) -> str | None:
    """Why the roofline of one run is invalid (a backend steadily below it), or None when it held."""
    roof = epoch_roofline(record.config, record.probe)
    if roof is None:
        return None
    below = [r for r in record.results if 0 < (r.summary or {}).get("steady_seconds_per_epoch", float("inf"))
             < members(r) * roof.seconds]
    if not below:
        return None
    parts = [f"{r.backend} ({r.device}) trains an epoch in {r.summary['steady_seconds_per_epoch']:.3g} s, below "
             f"the roofline of {members(r) * roof.seconds:.3g} s" for r in below]
    return ("roofline invalid: " + "; ".join(parts) + f". A ceiling the probe measured (peak {roof.peak_gflops:,.1f} "
            f"GFLOP/s, bandwidth {_gbps(roof.bandwidth_gbps)}) is below what this device did, so no 'x roofline' "
            "ratio is shown")


def _gbps(value: float | None) -> str:
    return "not measured" if not value else f"{value:,.1f} GB/s"


def multiple_cell(summary: dict | None, fig: dict, invalid: str | None) -> str:
    """The 'x roofline' cell: the ratio ('(compute only)' for an old probe), 'invalid' when the run's
    roofline did not hold, 'not measured' without ceilings for the run's precision, '-' without a time."""
    if not (summary or {}).get("steady_seconds_per_epoch"):
        return "-"
    if "roofline_multiple" not in fig:
        return "not measured"
    if invalid:
        return "invalid"
    suffix = " (compute only)" if fig["roofline_kind"] == COMPUTE_ONLY else ""
    return f"{fig['roofline_multiple']:.2f}{suffix}"


def mfu_cell(summary: dict | None, fig: dict) -> str:
    """The 'MFU %' cell: model FLOP/s over the peak of the run's arithmetic, in percent."""
    if not (summary or {}).get("steady_seconds_per_epoch"):
        return "-"
    return f"{100 * fig['fraction_of_peak']:.1f}" if "fraction_of_peak" in fig else "not measured"


def products_cell(fig: dict) -> str:
    """The 'x torch products' cell (the old floor, a reference only)."""
    return f"{fig['floor_multiple']:.2f}" if "floor_multiple" in fig else "-"


CEILINGS = ("peak_gflops", "bandwidth_gbps", "bandwidth_working_set_gbps", "bandwidth_large_gbps")


def best_ceilings(first: dict, second: dict | None) -> dict:
    """`first` probe with each measured ceiling raised to `second`'s where that is higher (a probe before
    and one after a run's jobs); `ceiling_probes` counts them."""
    if not second:
        return first
    best = dict(first)
    for key in CEILINGS:
        if isinstance(second.get(key), (int, float)) and second[key] > (first.get(key) or 0):
            best[key] = second[key]
    if second.get("kernel_seconds") and second["kernel_seconds"] < (first.get("kernel_seconds") or float("inf")):
        best["kernel_seconds"] = second["kernel_seconds"]  # a cost: the lower is the machine's best
    best["ceiling_probes"] = 2
    return best
