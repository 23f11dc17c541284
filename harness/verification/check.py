"""`harness check` enforces the loss targets; `harness calibrate` derives them from real runs.

`check --profile P` trains the profile's backends for its epochs (or, with `--from RUN`, takes a finished
run) and judges EVERY epoch from 1 to the profile's last that the run has (harness.verification.calibration
says how each limit was derived and what false-alarm rate a check has):
- bands: each backend's metrics against the epoch's band, on any device kind (bands describe the metric
  over seeds, the same on every device by design);
- gaps: each same-seed difference of two of the profile's backends in the primary metric, against the
  epoch's gap tolerance, on the device kind the profile was calibrated on only (rounding differs by device);
- windows: the mean of those differences over the profile's window of epochs ending at each epoch.
A run of another experiment (model config, precision, data limits, noise) is "not calibrated"; a check
that judged nothing is not a pass (harness.cli.check exits with NOT_JUDGED).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from harness.config import ModelConfig, RunConfig
from harness.verification import agreement
from harness.verification.targets import Profile, load_targets


def default_target_loss(workload: str = "mlp-vae", precision: str = "float32") -> float:
    """Time-to-quality threshold: the top of the primary metric's band at the last epoch of the longest
    profile calibrated on `workload`, in `precision` if one was (else in float32); KeyError when there
    is none."""
    mine = [p for p in load_targets().values()
            if (p.calibrated_on.get("model") or {}).get("workload", "mlp-vae") == workload and p.per_epoch]
    same = [p for p in mine if p.calibrated_on.get("precision", "float32") == precision]
    profile = max(same or [p for p in mine if p.calibrated_on.get("precision", "float32") == "float32"],
                  key=lambda p: p.epochs)
    return profile.per_epoch[profile.epochs].bands[ModelConfig.from_dict(profile.calibrated_on.get("model") or {}).spec().primary_metric].high


@dataclass
class Finding:
    """One judged value (a backend's metric against its band, a pair's gap or window mean against its
    tolerance) or one failure to produce a value."""

    backend: str
    metric: str
    epoch: int
    value: float | None
    band: str
    seed: int
    ok: bool
    note: str = ""


@dataclass
class Judgement:
    """Everything `check` found in one run: the findings, and why parts of the run were not judged."""

    profile: str
    epochs: int  # the last epoch judged
    findings: list[Finding] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    @property
    def judged(self) -> int:
        return sum(f.value is not None for f in self.findings)


def evaluate(record, profile: Profile) -> Judgement:
    """Judge every epoch of `record` from 1 to min(profile, run) against `profile`."""
    last = min(profile.epochs, record.config.epochs)
    out = Judgement(profile.name, last)
    seeds = sorted({r.seed for r in record.results})
    out.warnings += [f"seed {s} is a calibration seed of {profile.name!r}: judged, but not independent evidence"
                     for s in seeds if s in profile.calibration.get("seeds", [])]
    primary = record.config.model.spec().primary_metric
    for seed in seeds:
        mine = [r for r in record.results if r.seed == seed]
        _bands(out, mine, record.config, profile, last)
        _agreement(out, mine, record.config, profile, last, primary)
    return out


def _bands(out: Judgement, mine: list, config: RunConfig, profile: Profile, last: int) -> None:
    for r in mine:
        exp = agreement.experiment(config, r.device)
        if (why := profile.mismatch(exp, bands=True)) is not None:
            out.not_judged.append(f"{r.backend}: not calibrated: {why}")
            continue
        by_epoch = {e.epoch: e for e in r.epochs}
        for epoch in range(1, last + 1):
            if (targets := profile.per_epoch.get(epoch)) is None:
                continue
            if epoch not in by_epoch:
                why = f"{r.status}: {r.error}" if r.status != "ok" else "epoch missing"
                out.findings.append(Finding(r.backend, "status", epoch, None, f"epoch {epoch}", r.seed, False, why))
                break
            for metric, band in targets.bands.items():
                value = by_epoch[epoch].value(metric)
                out.findings.append(Finding(r.backend, metric, epoch, value, band.text(), r.seed, band.contains(value)))


def _agreement(out: Judgement, mine: list, config: RunConfig, profile: Profile, last: int, primary: str) -> None:
    calibrated = [r for r in mine if r.backend in profile.backends]
    outside = sorted(r.backend for r in mine if r.backend not in profile.backends)
    if outside:
        out.not_judged.append(f"agreement of {', '.join(outside)}: not calibrated (profile {profile.name!r} "
                              f"was calibrated on {', '.join(profile.backends)})")
    if len(calibrated) < 2:
        return
    exp = agreement.experiment(config, calibrated[0].device)
    if (why := profile.mismatch(exp)) is not None:
        out.not_judged.append(f"agreement on {exp['device_kind']}: not calibrated: {why} "
                              "(same-seed tolerances hold for the device kind they were measured on)")
        return
    width = profile.window
    for a, b in itertools.combinations(calibrated, 2):
        va, vb = ({e.epoch: e.primary for e in r.epochs} for r in (a, b))
        diffs = {e: va[e] - vb[e] for e in range(1, last + 1) if e in va and e in vb}
        pair = f"{a.backend} vs {b.backend}"
        for epoch, diff in diffs.items():
            if (t := profile.per_epoch.get(epoch)) is None:
                continue
            out.findings.append(Finding(pair, f"{primary} gap", epoch, abs(diff), f"<= {t.max_backend_difference:g}",
                                        a.seed, abs(diff) <= t.max_backend_difference))
            span = range(epoch - width + 1, epoch + 1)
            if width and t.window_tolerance is not None and all(e in diffs for e in span):
                mean = abs(sum(diffs[e] for e in span) / width)  # not statistics.mean: exact fractions, 20x slower
                out.findings.append(Finding(pair, f"{primary} {width}-epoch mean gap", epoch, mean,
                                            f"<= {t.window_tolerance:g}", a.seed, mean <= t.window_tolerance))
