"""`harness check` (train a profile, or judge a finished run, against calibrated targets) and
`harness calibrate` (derive the targets from runs over seeds)."""
from __future__ import annotations

import time
from pathlib import Path

from harness.cli.flags import add_run_flags, positive_int, run_config, seed_list
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.verification.check import evaluate
from harness.verification.targets import (
    TARGETS_FILE,
    Profile,
    calibrated_profile,
    get_profile,
    load_targets,
    write_targets,
)

ALL_BACKENDS = ("torch-reference", "torch", "torch-compile", "jax")  # a new profile's, unless --backends

def add_subcommands(sub) -> None:
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
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="create the profile if the targets file lacks it, with this many epochs (check seed 1)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-probe", action="store_true", help="skip the matmul peak / floor probe")
    add_run_flags(p, default_epochs=None)
    p.set_defaults(func=cmd_calibrate, backends=None)


def _profile_config(args, profile: Profile, seed: int) -> RunConfig:
    args.backends = args.backends or profile.backends
    args.seed, args.epochs, args.target_loss = seed, profile.epochs, None
    # A calibrated profile trains the workload it was calibrated on (--workload only names a new one's).
    args.workload = (profile.calibrated_on.get("model") or {}).get("workload", args.workload)
    if profile.calibrated_on.get("precision") == "bf16":  # and the precision (a bf16 profile judges bf16 runs only)
        args.precision = "bf16"
    return run_config(args)


def _run_profile(config: RunConfig, out: Path, data_dir, argv, probe: bool) -> object:
    from harness import data
    from harness.execution import runner
    from harness.reporting.console import RunProgress, console
    mnist_dir, _ = data.locate(data_dir)
    runner.prepare_run_dir(out, resume=False, force=True)
    console.print(f"{config.backends} seed {config.seed}, {config.epochs} epoch(s) -> {out}")
    with RunProgress(config.epochs) as progress:
        return runner.execute(config, out, mnist_dir, command="python -m harness " + " ".join(argv),
                              probe=probe, on_event=progress.on_event)


def cmd_check(args, argv) -> int:
    from rich.table import Table

    from harness.measurement import results
    from harness.reporting.console import console
    profile = get_profile(args.profile, args.targets)
    if args.from_run:
        out, record = args.from_run, results.load(args.from_run)
        seed = record.config.seed
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
        on = profile.calibrated_on
        console.print(f"[yellow]not calibrated[/yellow]: profile {profile.name!r} holds targets for "
                      f"{on.get('device_kind', '?')} {on.get('precision', 'float32')} runs of its experiment "
                      "only (the table says what differs); those results were not judged")
    console.print(f"results: {out}")
    return 1 if failed else 0


def cmd_calibrate(args, argv) -> int:
    from harness.measurement import results
    from harness.reporting.console import console
    profiles = load_targets(args.targets) if args.targets.exists() else {}
    if args.profile not in profiles and args.epochs is None:
        raise HarnessError(f"unknown profile {args.profile!r} in {args.targets}; give --epochs to create it")
    profile = profiles.get(args.profile) or Profile(args.profile, args.epochs, tuple(args.backends or ALL_BACKENDS), seed=1)
    if args.epochs is not None and args.epochs != profile.epochs:
        raise HarnessError(f"profile {profile.name!r} has {profile.epochs} epoch(s), not {args.epochs}")
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
