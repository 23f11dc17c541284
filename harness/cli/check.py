"""`harness check` (train a profile, or judge a finished run, against calibrated targets) and
`harness calibrate` (derive the targets from runs over seeds)."""
from __future__ import annotations

import time
from pathlib import Path

from harness.cli.flags import add_run_flags, positive_int, run_config, seed_list
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.verification import agreement
from harness.verification.calibration import calibrated_profile
from harness.verification.check import evaluate
from harness.verification.targets import (
    TARGETS_FILE,
    Profile,
    get_profile,
    load_targets,
    profile_for,
    write_targets,
)

ALL_BACKENDS = ("torch-reference", "torch", "torch-compile", "jax")  # a new profile's, unless --backends
NOT_JUDGED = 3  # check's exit code when it judged nothing (documented in its --help)

def add_subcommands(sub) -> None:
    p = sub.add_parser("check", help="run a loss-target profile and fail on any out-of-band metric",
                       epilog=f"exit codes: 0 every judged value passed; 1 a value failed; 2 bad input; "
                              f"{NOT_JUDGED} nothing was judged (no calibrated target covers the run), "
                              "unless --allow-uncalibrated")
    p.add_argument("--profile", default=None,
                   help="default: with --from, the profile the run's report uses; else 'ci'")
    p.add_argument("--allow-uncalibrated", action="store_true",
                   help=f"exit 0 instead of {NOT_JUDGED} when nothing could be judged")
    p.add_argument("--seed", type=int, default=None, help="default: the profile's seed")
    p.add_argument("--targets", type=Path, default=TARGETS_FILE)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-probe", action="store_true", help="skip the probe (the ceilings of the roofline)")
    p.add_argument("--from", dest="from_run", type=Path, default=None, metavar="RUN_DIR",
                   help="judge an existing run (every epoch up to the profile's last) instead of training")
    add_run_flags(p, default_epochs=None)
    p.set_defaults(func=cmd_check, backends=None)

    p = sub.add_parser("calibrate", help="derive a profile's per-epoch bands and tolerances from runs over seeds")
    p.add_argument("--profile", default="ci")
    p.add_argument("--seeds", type=seed_list, default=[2, 3, 4, 5, 6],
                   help="calibration seeds (default 2-6: the profiles' check seed 1 stays out)")
    p.add_argument("--from", dest="from_runs", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                   help="derive from these finished runs (one seed each, at least the profile's epochs) "
                        "instead of training")
    p.add_argument("--ensemble", action="store_true",
                   help="train the seeds as one run, each backend's seeds as one ensemble (harness run --ensemble)")
    p.add_argument("--held-out", type=seed_list, default=[],
                   help="validation seeds calibration must never see (recorded in the profile; the power "
                        "study benchmarks/check_power.py judges their runs)")
    p.add_argument("--targets", type=Path, default=TARGETS_FILE)
    p.add_argument("--write", action="store_true", help="write the targets into the targets file")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="create the profile if the targets file lacks it, with this many epochs (check seed 1)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-probe", action="store_true", help="skip the probe (the ceilings of the roofline)")
    add_run_flags(p, default_epochs=None)
    p.set_defaults(func=cmd_calibrate, backends=None)


def _profile_config(args, profile: Profile, seed: int | list[int]) -> RunConfig:
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
    console.print(f"{config.backends} seed(s) {', '.join(map(str, config.run_seeds()))}, {config.epochs} epoch(s) -> {out}")
    with RunProgress(config.epochs, len(config.run_seeds())) as progress:
        return runner.execute(config, out, mnist_dir, command="python -m harness " + " ".join(argv),
                              probe=probe, on_event=progress.on_event)


def _chosen_profile(args, record=None) -> Profile:
    """--profile, else (judging a finished run) the profile the run's report uses, else 'ci'."""
    if args.profile or record is None:
        return get_profile(args.profile or "ci", args.targets)
    device = record.results[0].device if record.results else record.config.device
    exp = agreement.experiment(record.config, device)
    found = profile_for(load_targets(args.targets), exp, record.config.epochs)
    if found is None:
        raise NotJudged(f"no profile of {args.targets} is calibrated for this run's experiment")
    return found


class NotJudged(Exception):
    """Nothing of the run could be judged."""


def cmd_check(args, argv) -> int:
    from harness.measurement import results
    from harness.reporting.check_report import print_judgement
    from harness.reporting.console import console
    try:
        if args.from_run:
            out, record = args.from_run, results.load(args.from_run)
            profile = _chosen_profile(args, record)
        else:
            profile = _chosen_profile(args)
            config = _profile_config(args, profile, args.seed if args.seed is not None else profile.seed)
            out = args.out or Path("runs") / f"check-{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            record = _run_profile(config, out, args.data_dir, argv, not args.no_probe)
    except NotJudged as exc:
        console.print(f"[yellow]not judged[/yellow]: {exc}")
        return 0 if args.allow_uncalibrated else NOT_JUDGED
    judgement = evaluate(record, profile)
    print_judgement(judgement, f"check --profile {profile.name} (epochs 1-{judgement.epochs})")
    console.print(f"results: {out}")
    if judgement.failed:
        return 1
    if not judgement.judged:
        console.print("[yellow]nothing was judged[/yellow]: this is not a pass (exit code "
                      f"{NOT_JUDGED}; --allow-uncalibrated accepts it)")
        return 0 if args.allow_uncalibrated else NOT_JUDGED
    return 0


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
    elif args.ensemble:
        out = args.out or Path("runs") / f"calibrate-{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        config = _profile_config(args, profile, args.seeds)
        records = [(out, _run_profile(config, out, args.data_dir, argv, not args.no_probe))]
    else:
        out = args.out or Path("runs") / f"calibrate-{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        records = []
        for seed in args.seeds:
            config = _profile_config(args, profile, seed)
            records.append((out / f"seed-{seed}", _run_profile(config, out / f"seed-{seed}", args.data_dir,
                                                                argv, not args.no_probe)))
    new = calibrated_profile(profile, records)
    seen = set(new.calibration["seeds"]) & ({profile.seed} | set(args.held_out))
    if seen & set(args.held_out):
        raise HarnessError(f"held-out seed(s) {sorted(seen & set(args.held_out))} are among the calibration seeds")
    new.calibration["held_out_seeds"] = sorted(args.held_out)
    if profile.seed in new.calibration["seeds"]:
        console.print(f"[yellow]note[/yellow]: the check seed {profile.seed} is among the calibration seeds")
    for epoch in sorted({1, new.epochs} | set(range(5, new.epochs + 1, 5))):
        t = new.per_epoch[epoch]
        window = "" if t.window_tolerance is None else f"; {new.window}-epoch mean gap <= {t.window_tolerance:g}"
        console.print(f"{new.name} epoch {epoch}: " + ", ".join(f"{m} {b.text()}" for m, b in t.bands.items())
                      + f"; gap <= {t.max_backend_difference:g}{window}")
    if args.write:
        profiles[new.name] = new
        write_targets(profiles, args.targets)
        console.print(f"written to {args.targets}")
    return 0
