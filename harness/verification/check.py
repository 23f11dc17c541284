"""`harness check` enforces the loss targets; `harness calibrate` derives them from real runs.

`check --profile P` trains the profile's backends for its epochs (or, with `--from RUN`, takes any run
at least that long) and judges the profile's epoch: every metric against its band and the largest
same-seed gap between backends against that epoch's calibrated tolerance (harness.verification.targets). It fails,
naming backend, metric, value, band and seed. A run of another experiment than the one calibrated
(another device kind, model config, precision, data limits or noise source) is reported as "not
calibrated" rather than judged.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.config import ModelConfig
from harness.errors import HarnessError
from harness.verification import agreement
from harness.verification.targets import (
    Profile,
    load_targets,
)


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
    """One checked value: a backend's metric against its band, or the gap between backends."""

    backend: str
    metric: str
    value: float | None
    band: str
    seed: int
    ok: bool
    note: str = ""


def evaluate(record, profile: Profile) -> list[Finding]:
    """Every band and agreement finding of `record` at the profile's epoch.

    Raises HarnessError when the run is shorter than the profile. A run of another experiment gets one
    finding, ok, whose note says it is not calibrated.
    """
    epoch = profile.epochs
    if record.config.epochs < epoch:
        raise HarnessError(f"profile {profile.name!r} judges epoch {epoch}, but the run has only "
                           f"{record.config.epochs} epoch(s)")
    findings: list[Finding] = []
    at_epoch: dict[int, dict[str, float]] = {}
    for r in record.results:
        targets = profile.at(epoch, agreement.experiment(record.config, r.device))
        if targets is None:
            why = agreement.mismatch(profile.calibrated_on, agreement.experiment(record.config, r.device))
            findings.append(Finding(r.backend, "all", None, "-", r.seed, True,
                                    f"not calibrated: {why or f'epoch {epoch} has no targets'}"))
            continue
        record_at = next((e for e in r.epochs if e.epoch == epoch), None)
        if r.status != "ok" and record_at is None:
            findings.append(Finding(r.backend, "status", None, "ok", r.seed, False, f"{r.status}: {r.error}"))
            continue
        if record_at is None:
            findings.append(Finding(r.backend, "status", None, f"epoch {epoch}", r.seed, False, "epoch missing"))
            continue
        at_epoch.setdefault(r.seed, {})[r.backend] = record_at.primary
        for metric, band in targets.bands.items():
            value = record_at.value(metric)
            findings.append(Finding(r.backend, metric, value, band.text(), r.seed, band.contains(value)))
    primary = record.config.model.spec().primary_metric
    for seed, losses in sorted(at_epoch.items()):
        gap = agreement.epoch_gaps({b: {epoch: v} for b, v in losses.items()}).get(epoch)
        targets = profile.at(epoch, agreement.experiment(record.config, record.results[0].device))
        if gap is not None and targets is not None:
            tol = targets.max_backend_difference
            findings.append(Finding(f"{gap.high} vs {gap.low}", f"{primary} gap at epoch {epoch}", gap.value,
                                    f"<= {tol:g}", seed, gap.value <= tol))
    return findings
