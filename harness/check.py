"""`harness check` enforces the loss targets; `harness calibrate` derives them from real runs.

`check --profile P` trains the profile's backends for its epochs (or, with `--from RUN`, takes any run
at least that long) and judges the profile's epoch: every metric against its band and the largest
same-seed gap between backends against that epoch's calibrated tolerance (harness.targets). It fails,
naming backend, metric, value, band and seed. A run of another experiment than the one calibrated
(another device kind, model config, precision, data limits or noise source) is reported as "not
calibrated" rather than judged.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness import agreement
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.targets import TARGETS_FILE, Profile, calibrated_profile, get_profile, load_targets, write_targets


def default_target_loss() -> float:
    """Time-to-quality threshold: the top of the full profile's test_loss band at its last epoch."""
    profile = get_profile("full")
    return profile.per_epoch[profile.epochs].bands["test_loss"].high


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
    if int(record.config.get("epochs", 0)) < epoch:
        raise HarnessError(f"profile {profile.name!r} judges epoch {epoch}, but the run has only "
                           f"{record.config.get('epochs')} epoch(s)")
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
        at_epoch.setdefault(r.seed, {})[r.backend] = record_at.test_loss
        for metric, band in targets.bands.items():
            value = getattr(record_at, metric)
            findings.append(Finding(r.backend, metric, value, band.text(), r.seed, band.contains(value)))
    for seed, losses in sorted(at_epoch.items()):
        gap = agreement.epoch_gaps({b: {epoch: v} for b, v in losses.items()}).get(epoch)
        targets = profile.at(epoch, agreement.experiment(record.config, record.results[0].device))
        if gap is not None and targets is not None:
            tol = targets.max_backend_difference
            findings.append(Finding(f"{gap.high} vs {gap.low}", f"test_loss gap at epoch {epoch}", gap.value,
                                    f"<= {tol:g}", seed, gap.value <= tol))
    return findings


# ---------------------------------------------------------------- commands

def add_subcommands(sub) -> None:
    from harness.cli import add_run_flags, seed_list
    p = sub.add_parser("check", help="run a loss-target profile and fail on any out-of-band metric")
    p.add_argument("--profile", default="ci")
    p.add_argument("--seed", type=int, default=None, help="default: the profile's seed")
    p.add_argument("--targets", type=Path, default=TARGETS_FILE)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-probe", action="store_true", help="skip the matmul peak / floor probe")
    p.add_argument("--from", dest="from_run", type=Path, default=None, metavar="RUN_DIR",
                   help="judge the profile's epoch of an existing run at least that long instead of training")
    add_run_flags(p, default_epochs=None)
    p.set_defaults(func=cmd_check, backends=None)

    p = sub.add_parser("calibrate", help="derive a profile's per-epoch bands and tolerances from runs over seeds")
    p.add_argument("--profile", default="ci")
    p.add_argument("--seeds", type=seed_list, default=[2, 3, 4, 5, 6],
                   help="calibration seeds (default 2-6: the profiles' check seed 1 stays out)")
    p.add_argument("--from", dest="from_runs", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                   help="derive from these finished runs (one seed each, at least the profile's epochs) "
                        "instead of training")
    p.add_argument("--targets", type=Path, default=TARGETS_FILE)
    p.add_argument("--write", action="store_true", help="write the targets into the targets file")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-probe", action="store_true", help="skip the matmul peak / floor probe")
    add_run_flags(p, default_epochs=None)
    p.set_defaults(func=cmd_calibrate, backends=None)


def _profile_config(args, profile: Profile, seed: int) -> RunConfig:
    from harness.cli import run_config
    args.backends = args.backends or profile.backends
    args.seed, args.epochs, args.target_loss = seed, profile.epochs, None
    return run_config(args)


def _run_profile(config: RunConfig, out: Path, data_dir, argv, probe: bool) -> object:
    from harness import data, runner
    from harness.console import RunProgress, console
    mnist_dir, _ = data.locate(data_dir)
    runner.prepare_run_dir(out, resume=False, force=True)
    console.print(f"{config.backends} seed {config.seed}, {config.epochs} epoch(s) -> {out}")
    with RunProgress(config.epochs) as progress:
        return runner.execute(config, out, mnist_dir, command="python -m harness " + " ".join(argv),
                              probe=probe, on_event=progress.on_event)


def cmd_check(args, argv) -> int:
    from rich.table import Table

    from harness import results
    from harness.console import console
    profile = get_profile(args.profile, args.targets)
    if args.from_run:
        out, record = args.from_run, results.load(args.from_run)
        seed = record.config.get("seed")
    else:
        config = _profile_config(args, profile, args.seed if args.seed is not None else profile.seed)
        out = args.out or Path("runs") / f"check-{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        record, seed = _run_profile(config, out, args.data_dir, argv, not args.no_probe), config.seed
    findings = evaluate(record, profile)
    table = Table(title=f"check --profile {profile.name} (epoch {profile.epochs}, seed {seed})")
    for col in ("backend", "metric", "value", "band", "seed", "result"):
        table.add_column(col)
    for f in findings:
        result = ("pass" if not f.note else f.note) if f.ok else f"[red]FAIL[/red] {f.note}"
        table.add_row(f.backend, f.metric, "-" if f.value is None else f"{f.value:.3f}", f.band, str(f.seed), result)
    console.print(table)
    failed = [f for f in findings if not f.ok]
    for f in failed:
        value = "-" if f.value is None else f"{f.value:.3f}"
        console.print(f"[red]FAIL[/red] {f.backend} {f.metric} = {value} outside {f.band} (seed {f.seed}) {f.note}")
    if any(f.note.startswith("not calibrated") for f in findings):
        console.print(f"[yellow]not calibrated[/yellow]: profile {profile.name!r} holds targets for "
                      f"{profile.calibrated_on.get('device_kind', '?')} runs only; those results were not judged")
    console.print(f"results: {out}")
    return 1 if failed else 0


def cmd_calibrate(args, argv) -> int:
    from harness import results
    from harness.console import console
    profiles = load_targets(args.targets) if args.targets.exists() else {}
    if args.profile not in profiles:
        raise HarnessError(f"unknown profile {args.profile!r} in {args.targets}")
    profile = profiles[args.profile]
    if args.from_runs:
        records = [(d, results.load(d)) for d in args.from_runs]
    else:
        out = args.out or Path("runs") / f"calibrate-{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        records = []
        for seed in args.seeds:
            config = _profile_config(args, profile, seed)
            records.append((out / f"seed-{seed}", _run_profile(config, out / f"seed-{seed}", args.data_dir,
                                                                argv, not args.no_probe)))
    new = calibrated_profile(profile, records)
    if profile.seed in new.calibration["seeds"]:
        console.print(f"[yellow]note[/yellow]: the check seed {profile.seed} is among the calibration seeds")
    for epoch in sorted({1, new.epochs} | set(range(10, new.epochs + 1, 10))):
        t = new.per_epoch[epoch]
        console.print(f"{new.name} epoch {epoch}: " + ", ".join(f"{m} {b.text()}" for m, b in t.bands.items())
                      + f"; gap <= {t.max_backend_difference:g} ({t.agreement_derivation})")
    if args.write:
        profiles[new.name] = new
        write_targets(profiles, args.targets)
        console.print(f"written to {args.targets}")
    return 0

