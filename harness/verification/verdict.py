"""Do the backends agree? Same-seed gaps in the workload's primary test metric per epoch, judged by that
epoch's calibrated tolerance.

Results are grouped into experiments (harness.verification.agreement: same seed, device kind, model config,
precision, data limits and noise source); within a group, each epoch's largest gap between two backends
is judged against the tolerance harness/verification/targets.toml holds for exactly that epoch and experiment.
Epochs without one are "not calibrated": their gaps are shown, never judged.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.measurement.results import finite_epochs
from harness.verification import agreement
from harness.verification.targets import EpochTargets, load_targets, profile_for
from workloads.spec import Metric



@dataclass(frozen=True)
class JudgedGap:
    """One epoch's largest same-seed gap and, where calibrated, its tolerance."""

    gap: agreement.Gap
    targets: EpochTargets | None
    profile: str | None

    @property
    def ok(self) -> bool | None:
        return None if self.targets is None else self.gap.value <= self.targets.max_backend_difference

    @property
    def share(self) -> float:
        """The gap as a fraction of its tolerance (calibrated gaps only): above 1 is disagreement."""
        return self.gap.value / self.targets.max_backend_difference


@dataclass(frozen=True)
class Group:
    """Entries of one seed and one experiment, with every epoch's judged gap."""

    seed: int
    experiment: dict[str, Any]
    labels: list[str]
    gaps: dict[int, JudgedGap]
    why_uncalibrated: str  # why no profile covers this experiment; "" when one does
    metric: str  # the name of the primary test metric whose gaps these are (one workload per experiment)
    unit: str    # that metric's unit, as its workload declares it


def known_profiles() -> dict:
    try:
        return load_targets()
    except HarnessError:
        return {}


def groups(entries: list) -> list[Group]:
    """`entries` have .label, .record (RunRecord) and .result (BackendResult), as harness.reporting.report's Entry."""
    by_key: dict[tuple, list] = defaultdict(list)
    for e in entries:
        if finite_epochs(e.result):
            exp = agreement.experiment(e.record.config, e.result.device)
            by_key[(e.result.seed, json.dumps(exp, sort_keys=True))].append(e)
    profiles = known_profiles()
    out = []
    for (seed, exp_text), members in by_key.items():
        if len(members) < 2:
            continue
        exp = json.loads(exp_text)
        last = max(r.epoch for e in members for r in finite_epochs(e.result))
        profile = profile_for(profiles, exp, last)  # the one check --from uses for this run
        if profile is not None and profile.at(1, exp) is not None:
            # Same-seed tolerances hold for the backends they were calibrated on.
            members = [e for e in members if e.result.backend in profile.backends] or members
        losses = {e.label: {r.epoch: r.primary for r in finite_epochs(e.result)} for e in members}
        judged = {}
        for epoch, gap in agreement.epoch_gaps(losses).items():
            targets = profile.at(epoch, exp) if profile is not None else None
            judged[epoch] = JudgedGap(gap, targets, profile.name if targets is not None else None)
        primary = _primary_metric(members[0].record.config)
        out.append(Group(seed, exp, [e.label for e in members], judged, why_uncalibrated(exp, profiles),
                         primary.name, primary.unit))
    return out


def _primary_metric(config: RunConfig) -> Metric:
    """The metric the gaps are taken in (`EpochRecord.primary`, the workload's first), so the prose names
    it and its unit rather than assuming every workload reports test_loss in nats."""
    return config.model.spec().metrics[0]


def why_uncalibrated(exp: dict[str, Any], profiles: dict) -> str:
    calibrated = [p for p in profiles.values() if p.calibrated_on]
    if not calibrated:
        return "no calibrated targets"
    reasons = [agreement.mismatch(p.calibrated_on, exp) for p in calibrated]
    return f"the targets are for another experiment: {reasons[0]}" if all(reasons) else ""
