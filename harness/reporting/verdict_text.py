"""The verdict's words: the agreement sentences and the same-seed gap table of a report, and the bands
its loss figure marks, from the judgement harness.verification.verdict makes."""
from __future__ import annotations

from harness.config import RunConfig
from harness.reporting.figures import BandMark
from harness.verification import agreement, verdict
from harness.verification.verdict import Group, groups

TABLE_EPOCHS = (1, 10, 50)  # epochs the gap table always shows when a run has them (plus its last)

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
    exp = agreement.experiment(config, device)
    marks, names = [], []
    profiles = verdict.known_profiles()
    for p in sorted(profiles.values(), key=lambda p: p.epochs):
        t = p.bands_at(p.epochs, exp)  # bands hold on any device kind
        if t is None:
            continue
        names.append(f"'{p.name}' epoch {p.epochs}")
        marks += [BandMark(m, p.epochs, b.low, b.high) for m, b in t.bands.items() if m != "train_loss"]
    if not marks:
        return [], "no calibrated bands for this experiment (" + (verdict.why_uncalibrated(exp, profiles) or "none") + ")."
    return marks, f"the calibrated bands of harness/verification/targets.toml ({', '.join(names)}) for this experiment."
