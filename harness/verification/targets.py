"""Loss targets per profile and epoch: what `harness calibrate` derives and what everything else judges by.

harness/verification/targets.toml holds, for each profile (`ci`: 1 epoch, `full`: 50), the experiment it was
calibrated on (device kind, model config, precision, data limits, noise source), the calibration seeds
and runs, and for EVERY epoch of the profile: a band per metric and the largest same-seed gap between
backends that is still agreement, each value with its derivation beside it. A value is used only for
the epoch and the experiment it was measured for; anything else is "not calibrated".
"""
from __future__ import annotations

import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from harness import atomic
from harness.config import ModelConfig
from harness.errors import HarnessError
from harness.verification.agreement import epoch_gaps, experiment, mismatch

TARGETS_FILE = Path(__file__).with_name("targets.toml")
# Band rule: [min - margin, max + margin] of the calibration runs at that epoch, margin =
# max(MIN_MARGIN, MARGIN_FRACTION * (max - min)); seed-to-seed spread dominates, so the margin scales with it.
MIN_MARGIN = 1.0
MARGIN_FRACTION = 0.5
# Agreement rule: allowed same-seed gap = max(MIN_AGREEMENT, AGREEMENT_FACTOR * largest gap observed at
# that epoch over the calibration seeds). The floor keeps epochs where the backends happened to agree
# to a few hundredths from flagging the next seed's ordinary rounding.
MIN_AGREEMENT = 0.25
AGREEMENT_FACTOR = 2.0
HEADER = ("# Loss targets per profile and epoch. Written by `python -m harness calibrate --write` from the\n"
          "# runs named under [profiles.*.calibration]; every value has its derivation beside it.\n"
          "# Do not edit numbers by hand.\n\n")


@dataclass(frozen=True)
class Band:
    """Allowed [low, high] of one metric at one epoch, with how it was derived."""

    low: float
    high: float
    derivation: str = ""

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def text(self) -> str:
        return f"[{self.low:.2f}, {self.high:.2f}]"


@dataclass(frozen=True)
class EpochTargets:
    """What is calibrated for one epoch: the metric bands and the allowed same-seed backend gap."""

    epoch: int
    bands: dict[str, Band]
    max_backend_difference: float
    agreement_derivation: str = ""


@dataclass(frozen=True)
class Profile:
    """A named check: how long to train, on which experiment it was calibrated, and the targets per epoch."""

    name: str
    epochs: int
    backends: tuple[str, ...]
    seed: int  # the seed `check` trains (kept out of the calibration seeds, so the check is a real test)
    calibrated_on: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)  # seeds, runs, rules
    per_epoch: dict[int, EpochTargets] = field(default_factory=dict)

    def at(self, epoch: int, exp: dict[str, Any]) -> EpochTargets | None:
        """The targets of `epoch` when this profile was calibrated on experiment `exp`, else None."""
        if not self.calibrated_on or mismatch(self.calibrated_on, exp) is not None:
            return None
        return self.per_epoch.get(epoch)


def load_targets(path: Path | None = None) -> dict[str, Profile]:
    """Parse targets.toml (default TARGETS_FILE, read at call time); a missing or malformed file is one clear error."""
    path = path or TARGETS_FILE
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise HarnessError(f"targets file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"targets file {path} is not valid TOML: {exc}") from None
    try:
        return {name: _profile(name, p) for name, p in raw["profiles"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise HarnessError(f"targets file {path}: malformed profile ({type(exc).__name__}: {exc})") from None


def _profile(name: str, p: dict) -> Profile:
    # Bands exist for the train loss and the test metrics of the workload the profile was calibrated on.
    known = {"train_loss", *ModelConfig.from_dict(p.get("calibrated_on", {}).get("model") or {}).spec().metric_names}
    per_epoch = {}
    for e in p.get("per_epoch", []):
        bands = {m: Band(float(b["low"]), float(b["high"]), str(b.get("derivation", "")))
                 for m, b in e.get("bands", {}).items()}
        if set(bands) - known:
            raise ValueError(f"unknown metric(s) {sorted(set(bands) - known)} in profile {name!r}")
        if any(b.low > b.high for b in bands.values()):
            raise ValueError(f"a band of {name} epoch {e['epoch']} has low > high")
        per_epoch[int(e["epoch"])] = EpochTargets(int(e["epoch"]), bands, float(e["max_backend_difference"]),
                                                  str(e.get("agreement_derivation", "")))
    return Profile(name, int(p["epochs"]), tuple(p["backends"]), int(p.get("seed", 1)),
                   dict(p.get("calibrated_on", {})), dict(p.get("calibration", {})), per_epoch)


def get_profile(name: str, path: Path | None = None) -> Profile:
    profiles = load_targets(path)
    path = path or TARGETS_FILE
    if name not in profiles:
        raise HarnessError(f"unknown profile {name!r}; {path} defines: {', '.join(profiles)}")
    return profiles[name]


def targets_at(profiles: dict[str, Profile], epoch: int, exp: dict[str, Any]) -> tuple[EpochTargets, str] | None:
    """The calibrated targets of `epoch` for experiment `exp` and the profile they come from, or None.

    Where several profiles calibrate the epoch, the one with more calibration runs wins (then the longer).
    """
    found = [(p, t) for p in profiles.values() if (t := p.at(epoch, exp)) is not None]
    if not found:
        return None
    p, t = max(found, key=lambda pt: (len(pt[0].calibration.get("runs", [])), pt[0].epochs))
    return t, p.name


def write_targets(profiles: dict[str, Profile], path: Path) -> None:
    """Serialise the profiles with tomli-w (atomically), the derivations beside their values."""
    doc = {"profiles": {p.name: _profile_dict(p) for p in profiles.values()}}
    atomic.write_text(path, HEADER + tomli_w.dumps(doc))


def _profile_dict(p: Profile) -> dict:
    return {"epochs": p.epochs, "backends": list(p.backends), "seed": p.seed,
            "calibrated_on": p.calibrated_on, "calibration": p.calibration,
            "per_epoch": [{"epoch": t.epoch, "max_backend_difference": t.max_backend_difference,
                           "agreement_derivation": t.agreement_derivation,
                           "bands": {m: {"low": b.low, "high": b.high, "derivation": b.derivation}
                                     for m, b in t.bands.items()}}
                          for t in sorted(p.per_epoch.values(), key=lambda t: t.epoch)]}


# ---------------------------------------------------------------- calibration

def derive_band(values: list[float], runs: int) -> Band:
    lo, hi = min(values), max(values)
    margin = max(MIN_MARGIN, MARGIN_FRACTION * (hi - lo))
    return Band(round(lo - margin, 2), round(hi + margin, 2),
                f"{runs} runs: min {lo:.2f} mean {statistics.mean(values):.2f} max {hi:.2f}; "
                f"band = [min, max] +- max({MIN_MARGIN}, {MARGIN_FRACTION} x range) = +-{margin:.2f}")


def derive_agreement(gaps: list[tuple[float, int, str]]) -> tuple[float, str]:
    """gaps: (largest gap, seed, 'a vs b') per calibration seed at one epoch."""
    worst, seed, who = max(gaps)
    allowed = round(max(MIN_AGREEMENT, AGREEMENT_FACTOR * worst), 3)
    return allowed, (f"largest same-seed gap over {len(gaps)} seeds: {worst:.3f} (seed {seed}, {who}); "
                     f"allowed = max({MIN_AGREEMENT}, {AGREEMENT_FACTOR} x largest)")


def results_by_seed(records: list[tuple[str, Any]]) -> dict[int, dict[str, Any]]:
    """{seed: {backend: result}} of calibration runs, one experiment; runs of one seed with disjoint
    backends are joined (a seed's backends may be trained as several runs, on several cores)."""
    exp = experiment(records[0][1].config)
    joined: dict[int, dict[str, Any]] = {}
    for folder, rec in records:
        if (why := mismatch(exp, experiment(rec.config))) is not None:
            raise HarnessError(f"calibration runs are not one experiment: {folder}: {why}")
        seed = rec.config.seed
        for r in rec.results:
            if r.backend in joined.setdefault(seed, {}):
                raise HarnessError(f"calibration run {folder} repeats {r.backend} for seed {seed}")
            joined[seed][r.backend] = r
    return joined


def calibrated_profile(profile: Profile, records: list[tuple[str, Any]]) -> Profile:
    """A profile whose every epoch's targets come from `records`: (run folder, RunRecord).

    The records must be one experiment and hold, for each seed, every profile backend with at least
    `profile.epochs` finished epochs (in one run or several); anything else is an error and nothing is
    written.
    """
    if not records:
        raise HarnessError("calibration needs at least one run")
    exp = experiment(records[0][1].config)
    metrics = (*records[0][1].config.model.spec().metric_names, "train_loss")
    values: dict[int, dict[str, list[float]]] = {e: {m: [] for m in metrics} for e in range(1, profile.epochs + 1)}
    gaps: dict[int, list[tuple[float, int, str]]] = {e: [] for e in values}
    joined = results_by_seed(records)
    for seed, by_backend in sorted(joined.items()):
        missing = [b for b in profile.backends if b not in by_backend or by_backend[b].status != "ok"
                   or len(by_backend[b].epochs) < profile.epochs]
        if missing:
            raise HarnessError(f"calibration runs of seed {seed} lack {profile.epochs} ok epoch(s) of: {', '.join(missing)}")
        losses = {b: {e.epoch: e.primary for e in by_backend[b].epochs} for b in profile.backends}
        for epoch, gap in epoch_gaps(losses).items():
            if epoch in gaps:
                gaps[epoch].append((gap.value, seed, f"{gap.high} vs {gap.low}"))
        for b in profile.backends:
            for e in by_backend[b].epochs[:profile.epochs]:
                for m in metrics:
                    values[e.epoch][m].append(e.value(m))
    per_epoch = {}
    for epoch, per_metric in values.items():
        allowed, why = derive_agreement(gaps[epoch])
        per_epoch[epoch] = EpochTargets(epoch, {m: derive_band(v, len(v)) for m, v in per_metric.items()},
                                        allowed, why)
    calibration = {"seeds": sorted(joined), "runs": [str(f) for f, _ in records],
                   "rules": f"bands: [min, max] +- max({MIN_MARGIN}, {MARGIN_FRACTION} x range) per epoch; "
                            f"agreement: max({MIN_AGREEMENT}, {AGREEMENT_FACTOR} x largest same-seed gap) per epoch"}
    return Profile(profile.name, profile.epochs, profile.backends, profile.seed, exp, calibration, per_epoch)
