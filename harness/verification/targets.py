"""Loss targets per profile and epoch: what `harness calibrate` derives and what everything else judges by.

harness/verification/targets.toml holds, for each profile (`ci`: 1 epoch, `full`: 50), the experiment it was
calibrated on (device kind, model config, precision, data limits, noise source), the calibration seeds
and runs, and for EVERY epoch of the profile: a band per metric and the largest same-seed gap between
backends that is still agreement, each value with its derivation beside it. A value is used only for
the epoch and the experiment it was measured for; anything else is "not calibrated".
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from harness import atomic
from harness.config import ModelConfig
from harness.errors import HarnessError
from harness.verification.agreement import mismatch

TARGETS_FILE = Path(__file__).with_name("targets.toml")
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
    max_backend_difference: float  # the largest same-seed difference of two backends that is agreement
    agreement_derivation: str = ""
    window_tolerance: float | None = None  # the same for their mean over the profile's window ending here
    window_derivation: str = ""


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
        """The targets of `epoch` when this profile was calibrated on experiment `exp`, else None
        (agreement: same-seed gaps depend on the device's rounding, so the device kind must match)."""
        return None if self.mismatch(exp) is not None else self.per_epoch.get(epoch)

    def bands_at(self, epoch: int, exp: dict[str, Any]) -> EpochTargets | None:
        """The targets of `epoch` whose bands judge a run of `exp` on any device kind: bands describe the
        metric's distribution over seeds, the same on every device by design (same init, data, noise, math)."""
        return None if self.mismatch(exp, bands=True) is not None else self.per_epoch.get(epoch)

    def mismatch(self, exp: dict[str, Any], bands: bool = False) -> str | None:
        """Why this profile does not judge `exp` (its bands: on any device kind), or None."""
        if not self.calibrated_on:
            return "no calibrated targets"
        on = {**self.calibrated_on, "device_kind": exp.get("device_kind")} if bands else self.calibrated_on
        return mismatch(on, exp)

    @property
    def window(self) -> int:
        """Epochs in the trajectory window (0: none, the profile is shorter than one window)."""
        return int(self.calibration.get("window_epochs", 0))


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
        window = e.get("window_tolerance")
        per_epoch[int(e["epoch"])] = EpochTargets(int(e["epoch"]), bands, float(e["max_backend_difference"]),
                                                  str(e.get("agreement_derivation", "")),
                                                  None if window is None else float(window),
                                                  str(e.get("window_derivation", "")))
    return Profile(name, int(p["epochs"]), tuple(p["backends"]), int(p.get("seed", 1)),
                   dict(p.get("calibrated_on", {})), dict(p.get("calibration", {})), per_epoch)


def get_profile(name: str, path: Path | None = None) -> Profile:
    profiles = load_targets(path)
    path = path or TARGETS_FILE
    if name not in profiles:
        raise HarnessError(f"unknown profile {name!r}; {path} defines: {', '.join(profiles)}")
    return profiles[name]


def write_targets(profiles: dict[str, Profile], path: Path) -> None:
    """Serialise the profiles with tomli-w (atomically), the derivations beside their values."""
    doc = {"profiles": {p.name: _profile_dict(p) for p in profiles.values()}}
    atomic.write_text(path, HEADER + tomli_w.dumps(doc))


def _profile_dict(p: Profile) -> dict:
    return {"epochs": p.epochs, "backends": list(p.backends), "seed": p.seed,
            "calibrated_on": p.calibrated_on, "calibration": p.calibration,
            "per_epoch": [{"epoch": t.epoch, "max_backend_difference": t.max_backend_difference,
                           "agreement_derivation": t.agreement_derivation,
                           **({} if t.window_tolerance is None else
                              {"window_tolerance": t.window_tolerance, "window_derivation": t.window_derivation}),
                           "bands": {m: {"low": b.low, "high": b.high, "derivation": b.derivation}
                                     for m, b in t.bands.items()}}
                          for t in sorted(p.per_epoch.values(), key=lambda t: t.epoch)]}


def profile_for(profiles: dict[str, Profile], exp: dict[str, Any], epochs: int) -> Profile | None:
    """The one profile that judges a run of `exp` lasting `epochs` epochs, in reports and in `check --from`
    alike: of those whose bands cover the experiment (those calibrated on its device kind first), the
    shortest that covers every epoch of the run (its Bonferroni family is the smallest), else the longest;
    None when no profile covers the experiment."""
    mine = [p for p in profiles.values() if p.per_epoch and p.mismatch(exp, bands=True) is None]
    own = [p for p in mine if p.mismatch(exp) is None]  # calibrated on this device kind: gaps judged too
    mine = own or mine
    covering = [p for p in mine if p.epochs >= epochs]
    if covering:
        return min(covering, key=lambda p: (p.epochs, -len(p.calibration.get("seeds", []))))
    return max(mine, key=lambda p: (p.epochs, len(p.calibration.get("seeds", []))), default=None)
