"""`python -m harness compare BASE_RUN NEW_RUN [--markdown FILE]`: what changed between two runs.

Per backend and device: the change in each of the workload's test metrics at the last epoch both runs
finished, and the change in steady seconds per epoch, each marked when it exceeds the noise we measured.
The two runs must be one experiment with one seed (harness.verification.agreement); anything else is refused with
one line that says what differs.

Significance rules (one source: `same_backend_tolerance`, `loss_change` and `speed_change`):
- Loss: a backend is judged against itself. On a CPU with one thread the same code gives bit-identical
  losses (the resume and determinism tests check it), so the tolerance is 0 and any difference is a
  change: new code, new library versions or new hardware. With more threads torch eager may differ in
  its last digits between identical runs, so the tolerance is that epoch's calibrated same-seed gap.
  Elsewhere (a GPU, other thread counts) run-to-run drift has not been calibrated: shown, not judged.
- Speed: each run measures its own noise as the min-max range of its steady epochs (train_seconds of
  the epochs after the first). A change counts when the new median lies outside the base's [min, max]
  widened on both sides by the new run's own range (max - min), so the noise of both runs is allowed
  for, AND differs from the base median by more than MIN_RELATIVE_SPEED_CHANGE. The relative floor is
  there because a run with one or two steady epochs shows (almost) no spread although timings of
  identical runs differ by a few percent. A run with no steady epoch is not judged.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.measurement import results
from harness.measurement.results import BackendResult, finite_epochs
from harness.verification import agreement
from harness.verification.targets import load_targets, profile_for

MIN_RELATIVE_SPEED_CHANGE = 0.05  # a policy floor (see the module docstring), not a measured number


@dataclass(frozen=True)
class Steady:
    """Steady-state seconds per epoch of one run: median and range over the epochs after the first."""

    median: float
    low: float
    high: float
    n: int

    @property
    def spread(self) -> float:
        return self.high - self.low


def steady(r: BackendResult | None) -> Steady | None:
    """From the epoch records themselves (not the stored summary), so an edited file is judged as is."""
    secs = [e.train_seconds for e in (r.epochs[1:] if r else [])]
    return Steady(statistics.median(secs), min(secs), max(secs), len(secs)) if secs else None


def speed_change(base: Steady | None, new: Steady | None) -> int | None:
    """+1 slower, -1 faster beyond the measured spread, 0 within it, None when not judged."""
    if base is None or new is None:
        return None
    floor = MIN_RELATIVE_SPEED_CHANGE * base.median
    if new.median > base.high + new.spread and new.median - base.median > floor:
        return 1
    if new.median < base.low - new.spread and base.median - new.median > floor:
        return -1
    return 0


def same_backend_tolerance(base: BackendResult | None, new: BackendResult | None, config: RunConfig | None = None,
                           epoch: int | None = None) -> tuple[float | None, str]:
    """(tolerance, where it comes from) of one backend against itself at `epoch`; None: not calibrated.

    One CPU thread: 0, the same code reproduces its losses bit for bit. Several threads: identical torch
    eager processes were seen to differ in the last float32 digits (docs/correctness.md, 7 of 142 runs on
    two threads), and a last-digit difference grows over training as the differences between backends do,
    so the calibrated same-seed gap of that epoch (targets.toml) is the tolerance. Other devices or thread
    counts: not calibrated."""
    if base is None or new is None:
        return None, "not calibrated"
    same_cpu = agreement.device_kind(base.device) == "cpu" == agreement.device_kind(new.device)
    if not same_cpu or base.threads != new.threads:
        return None, "not calibrated (other device or thread count)"
    if base.threads == 1:
        return 0.0, "exact (one CPU thread: bit-identical)"
    if config is None or not epoch:
        return None, f"not calibrated ({base.threads} threads, no epoch in common)"
    exp = agreement.experiment(config, base.device)
    profile = profile_for(load_targets(), exp, epoch)
    targets = profile.at(epoch, exp) if profile else None
    if targets is None:
        return None, f"not calibrated ({base.threads} threads, no same-seed tolerance for epoch {epoch})"
    return targets.max_backend_difference, (f"{base.threads} threads: the same-seed gap tolerance of epoch {epoch} "
                                            f"(profile '{profile.name}')")


def loss_change(base: float | None, new: float | None, tol: float | None) -> int | None:
    """+1 worse, -1 better beyond the tolerance, 0 within it, None when not judged."""
    if base is None or new is None or tol is None:
        return None
    return 0 if abs(new - base) <= tol else (1 if new > base else -1)


@dataclass(frozen=True)
class Row:
    """The comparison of one backend on one device."""

    backend: str
    device: str
    base: BackendResult | None
    new: BackendResult | None
    epoch: int | None
    metrics: dict[str, tuple[float | None, float | None]]  # test metric -> (base, new) at `epoch`
    speed: tuple[Steady | None, Steady | None]
    tolerance: float | None  # same-backend loss tolerance; None = not calibrated
    tolerance_source: str    # why that tolerance (exact, a calibrated gap, or not calibrated)
    metric_flags: dict[str, int | None]  # test metric -> loss_change
    speed_flag: int | None

    @property
    def loss_flag(self) -> int | None:
        """The primary metric's change flag."""
        return next(iter(self.metric_flags.values()))


def _at_common_epoch(base: BackendResult | None, new: BackendResult | None):
    """The last epoch both runs finished with finite losses, and those epochs' records."""
    if base is None or new is None:
        return None, None, None
    b = {e.epoch: e for e in finite_epochs(base)}
    n = {e.epoch: e for e in finite_epochs(new)}
    common = set(b) & set(n)
    if not common:
        return None, None, None
    k = max(common)
    return k, b[k], n[k]


def check_comparable(base_dir: Path, base_cfg: RunConfig, new_dir: Path, new_cfg: RunConfig) -> None:
    """One-line refusal unless both runs are one seed of one experiment."""
    if base_cfg.seed != new_cfg.seed:
        raise HarnessError(f"cannot compare {base_dir} and {new_dir}: seeds differ "
                           f"({base_cfg.seed} vs {new_cfg.seed}), so the losses are not one experiment")
    why = agreement.mismatch(agreement.experiment(base_cfg), agreement.experiment(new_cfg))
    if why:
        raise HarnessError(f"cannot compare {base_dir} and {new_dir}: {why}")


def compare(base_dir: Path, new_dir: Path) -> list[Row]:
    """Rows for every (backend, device) in either run."""
    base_rec, new_rec = results.load(base_dir), results.load(new_dir)
    check_comparable(base_dir, base_rec.config, new_dir, new_rec.config)
    keys = list(dict.fromkeys((r.backend, r.device) for r in base_rec.results + new_rec.results))
    names = new_rec.config.model.spec().metric_names
    rows = []
    for backend, device in keys:
        # A run holds one seed per backend and device; a sweep's first match stands for it.
        b = next((r for r in base_rec.results if (r.backend, r.device) == (backend, device)), None)
        n = next((r for r in new_rec.results if (r.backend, r.device) == (backend, device)), None)
        epoch, eb, en = _at_common_epoch(b, n)
        metrics = {name: (eb.metrics[name], en.metrics[name]) if epoch else (None, None) for name in names}
        speed, (tol, source) = (steady(b), steady(n)), same_backend_tolerance(b, n, new_rec.config, epoch)
        rows.append(Row(backend, device, b, n, epoch, metrics, speed, tol, source,
                        {name: loss_change(*pair, tol) for name, pair in metrics.items()}, speed_change(*speed)))
    return rows
