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

TABLE_EPOCHS = (1, 10, 50)  # epochs the gap table always shows when a run has them (plus its last)


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


def _profiles() -> dict:
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
    profiles = _profiles()
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
        out.append(Group(seed, exp, [e.label for e in members], judged, _why_uncalibrated(exp, profiles),
                         primary.name, primary.unit))
    return out


def _primary_metric(config: RunConfig) -> Metric:
    """The metric the gaps are taken in (`EpochRecord.primary`, the workload's first), so the prose names
    it and its unit rather than assuming every workload reports test_loss in nats."""
    return config.model.spec().metrics[0]


def _where(g: Group) -> str:
    return f"seed {g.seed}, {g.experiment['device_kind']}, noise {g.experiment['noise']}"


def sentences(entries: list) -> list[str]:
    """The agreement part of a report's verdict, one sentence per group."""
    out = []
    for g in groups(entries):
        calibrated = [j for j in g.gaps.values() if j.targets is not None]
        bad = [j for j in calibrated if not j.ok]
        names = ", ".join(g.labels)
        worst = max(calibrated, key=lambda j: j.share) if calibrated else None
        if bad:
            out.append(f"**Backends disagree** ({_where(g)}): at epoch {worst.gap.epoch} {worst.gap.high} and "
                       f"{worst.gap.low} differ by {worst.gap.value:.3f} {g.unit} in {g.metric}, beyond that epoch's "
                       f"calibrated tolerance of {worst.targets.max_backend_difference:g} (targets profile "
                       f"'{worst.profile}'); {len(bad)} of {len(calibrated)} calibrated epochs are beyond theirs.")
        elif calibrated:
            out.append(f"**{names} agree** ({_where(g)}): at each of the {len(calibrated)} calibrated epochs the "
                       f"largest same-seed {g.metric} gap is within that epoch's tolerance; closest at epoch "
                       f"{worst.gap.epoch}: {worst.gap.value:.3f} of {worst.targets.max_backend_difference:g} "
                       f"{g.unit} (targets profile '{worst.profile}').")
        uncalibrated = sorted(e for e, j in g.gaps.items() if j.targets is None)
        if uncalibrated:
            largest = max((g.gaps[e].gap for e in uncalibrated), key=lambda gap: gap.value)
            why = g.why_uncalibrated
            out.append(f"Agreement is **not calibrated** for {_span(uncalibrated)} of {names} ({_where(g)}"
                       f"{'; ' + why if why else ''}): the largest gap there, {largest.value:.3f} {g.unit} at epoch "
                       f"{largest.epoch}, is shown but not judged.")
    return out


def _why_uncalibrated(exp: dict[str, Any], profiles: dict) -> str:
    calibrated = [p for p in profiles.values() if p.calibrated_on]
    if not calibrated:
        return "no calibrated targets"
    reasons = [agreement.mismatch(p.calibrated_on, exp) for p in calibrated]
    return f"the targets are for another experiment: {reasons[0]}" if all(reasons) else ""


def _span(epochs: list[int]) -> str:
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    contiguous = epochs == list(range(epochs[0], epochs[-1] + 1))
    return f"epochs {epochs[0]}-{epochs[-1]}" if contiguous else f"epochs {', '.join(map(str, epochs))}"


def gap_table(entries: list) -> list[str]:
    """Markdown: the same-seed gap at epochs 1, 10, 50 and the last, per group, with tolerance and verdict."""
    lines = []
    for g in groups(entries):
        shown = sorted({e for e in TABLE_EPOCHS if e in g.gaps} | {max(g.gaps)}) if g.gaps else []
        if not shown:
            continue
        lines += [f"Same-seed {g.metric} gap ({_where(g)}):", "",
                  f"| epoch | largest gap ({g.unit}) | between | calibrated tolerance | verdict |", "|---|---|---|---|---|"]
        for epoch in shown:
            j = g.gaps[epoch]
            tol = "-" if j.targets is None else f"{j.targets.max_backend_difference:g} ('{j.profile}')"
            verdict = "not calibrated" if j.ok is None else ("agree" if j.ok else "**disagree**")
            lines.append(f"| {epoch} | {j.gap.value:.3f} | {j.gap.high} vs {j.gap.low} | {tol} | {verdict} |")
        lines.append("")
    return lines


def calibrated_bands(config: RunConfig, device: str) -> tuple[list, str]:
    """The loss figure's bands: each profile's last epoch, for this experiment, and a caption for them."""
    from harness.reporting.figures import BandMark
    exp = agreement.experiment(config, device)
    marks, names = [], []
    profiles = _profiles()
    for p in sorted(profiles.values(), key=lambda p: p.epochs):
        t = p.bands_at(p.epochs, exp)  # bands hold on any device kind
        if t is None:
            continue
        names.append(f"'{p.name}' epoch {p.epochs}")
        marks += [BandMark(m, p.epochs, b.low, b.high) for m, b in t.bands.items() if m != "train_loss"]
    if not marks:
        return [], "no calibrated bands for this experiment (" + (_why_uncalibrated(exp, profiles) or "none") + ")."
    return marks, f"the calibrated bands of harness/verification/targets.toml ({', '.join(names)}) for this experiment."
