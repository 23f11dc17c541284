"""Loss targets and the regression check: `harness calibrate` derives bands, `harness check` enforces them.

The bands live in one place, harness/targets.toml, each with its derivation (seeds, observed
min/mean/max, margin rule), and are written there by `calibrate --write` from real runs. `check` runs
a profile and fails, naming backend, metric, value, band and seed, when a backend is out of band or
the backends disagree with each other on the same seed.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness import atomic
from harness.config import RunConfig
from harness.errors import HarnessError

TARGETS_FILE = Path(__file__).with_name("targets.toml")
METRICS = ("test_loss", "test_loss_sampled", "train_loss")
# Margin rule: a band is [min - margin, max + margin] of the calibration runs, margin = max(MIN_MARGIN,
# MARGIN_FRACTION * (max - min)); seed-to-seed spread dominates, so the margin scales with it.
MIN_MARGIN = 1.0
MARGIN_FRACTION = 0.5
# Backend agreement: max(MIN_AGREEMENT, AGREEMENT_FACTOR * the largest difference observed on a seed).
MIN_AGREEMENT = 0.5
AGREEMENT_FACTOR = 2.0


@dataclass(frozen=True)
class Band:
    """Allowed [low, high] of one metric, with how it was derived."""

    low: float
    high: float
    derivation: str = ""

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Profile:
    """A named check: how long to train and what the results must satisfy."""

    name: str
    epochs: int
    backends: tuple[str, ...]
    seed: int
    bands: dict[str, Band]
    max_backend_difference: float
    agreement_derivation: str = ""


def load_targets(path: Path = TARGETS_FILE) -> dict[str, Profile]:
    """Parse targets.toml; a missing or malformed file is one clear error."""
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
    bands = {m: Band(float(b["low"]), float(b["high"]), str(b.get("derivation", "")))
             for m, b in p.get("bands", {}).items()}
    unknown = set(bands) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)} in profile {name!r}")
    for m, b in bands.items():
        if not b.low <= b.high:
            raise ValueError(f"band {name}.{m} has low > high")
    return Profile(name, int(p["epochs"]), tuple(p["backends"]), int(p.get("seed", 1)), bands,
                   float(p["max_backend_difference"]), str(p.get("agreement_derivation", "")))


def get_profile(name: str, path: Path = TARGETS_FILE) -> Profile:
    profiles = load_targets(path)
    if name not in profiles:
        raise HarnessError(f"unknown profile {name!r}; {path} defines: {', '.join(profiles)}")
    return profiles[name]


def default_target_loss() -> float:
    """Time-to-quality threshold: the top of the full profile's test_loss band."""
    return get_profile("full").bands["test_loss"].high


def final_metrics(result) -> dict[str, float]:
    last = result.epochs[-1]
    return {"test_loss": last.test_loss, "test_loss_sampled": last.test_loss_sampled,
            "train_loss": last.train_loss}


@dataclass
class Finding:
    """One checked value: a backend's metric against its band, or a disagreement between backends."""

    backend: str
    metric: str
    value: float | None
    band: str
    seed: int
    ok: bool
    note: str = ""


def evaluate(record, profile: Profile) -> list[Finding]:
    """Every band and agreement finding for a finished run record."""
    findings: list[Finding] = []
    finals: dict[tuple[str, int], dict[str, float]] = {}
    for r in record.results:
        if r.status != "ok" or len(r.epochs) < profile.epochs:
            findings.append(Finding(r.backend, "status", None, "ok", r.seed, False, f"{r.status}: {r.error}"))
            continue
        finals[(r.backend, r.seed)] = final_metrics(r)
        for metric, band in profile.bands.items():
            value = finals[(r.backend, r.seed)][metric]
            findings.append(Finding(r.backend, metric, value, f"[{band.low:.2f}, {band.high:.2f}]",
                                    r.seed, band.contains(value)))
    for seed in sorted({s for _, s in finals}):
        losses = {b: f["test_loss"] for (b, s), f in finals.items() if s == seed}
        if len(losses) > 1:
            lo, hi = min(losses, key=losses.get), max(losses, key=losses.get)
            spread = losses[hi] - losses[lo]
            findings.append(Finding(f"{hi} vs {lo}", "test_loss difference", spread,
                                    f"<= {profile.max_backend_difference:.2f}", seed,
                                    spread <= profile.max_backend_difference))
    return findings


# ---------------------------------------------------------------- calibration

def derive_band(values: list[float], seeds: list[int], backends: tuple[str, ...]) -> Band:
    lo, hi = min(values), max(values)
    margin = max(MIN_MARGIN, MARGIN_FRACTION * (hi - lo))
    derivation = (f"seeds {_seed_text(seeds)} x {','.join(backends)} ({len(values)} runs): observed "
                  f"min {lo:.2f} mean {statistics.mean(values):.2f} max {hi:.2f}; band = observed range "
                  f"+- max({MIN_MARGIN}, {MARGIN_FRACTION} * range) = +-{margin:.2f}")
    return Band(round(lo - margin, 2), round(hi + margin, 2), derivation)


def derive_agreement(diffs: list[float], seeds: list[int]) -> tuple[float, str]:
    worst = max(diffs) if diffs else 0.0
    allowed = max(MIN_AGREEMENT, AGREEMENT_FACTOR * worst)
    return round(allowed, 2), (f"largest test_loss difference between backends on one seed over seeds "
                               f"{_seed_text(seeds)}: {worst:.3f}; allowed = max({MIN_AGREEMENT}, "
                               f"{AGREEMENT_FACTOR} * observed)")


def _seed_text(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))


def calibrated_profile(profile: Profile, records: list) -> Profile:
    """A new profile whose bands come from `records` (one finished run record per seed)."""
    seeds = sorted({r.seed for rec in records for r in rec.results})
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    diffs = []
    for rec in records:
        finals = [final_metrics(r) for r in rec.results if r.status == "ok"]
        if len(finals) != len(rec.results):
            bad = [f"{r.backend} seed {r.seed}: {r.status} ({r.error})" for r in rec.results if r.status != "ok"]
            raise HarnessError(f"calibration run failed, no bands written: {'; '.join(bad)}")
        for f in finals:
            for m in METRICS:
                values[m].append(f[m])
        tl = [f["test_loss"] for f in finals]
        diffs.append(max(tl) - min(tl))
    bands = {m: derive_band(v, seeds, profile.backends) for m, v in values.items()}
    allowed, why = derive_agreement(diffs, seeds)
    return dataclasses.replace(profile, bands=bands, max_backend_difference=allowed, agreement_derivation=why)


def write_targets(profiles: dict[str, Profile], path: Path = TARGETS_FILE) -> None:
    """Serialise the profiles as TOML (tomllib reads only; the structure is small and fixed)."""
    lines = ["# Loss targets, one band per profile and metric. Written by",
             "#   python -m harness calibrate --profile P --seeds S --write",
             "# from real runs on the CPU; each band says how it was derived. Do not edit numbers by hand.", ""]
    for p in profiles.values():
        lines += [f"[profiles.{p.name}]", f"epochs = {p.epochs}",
                  "backends = [" + ", ".join(f'"{b}"' for b in p.backends) + "]",
                  f"seed = {p.seed}", f"max_backend_difference = {p.max_backend_difference}",
                  f'agreement_derivation = "{p.agreement_derivation}"', ""]
        for m, b in p.bands.items():
            lines += [f"[profiles.{p.name}.bands.{m}]", f"low = {b.low}", f"high = {b.high}",
                      f'derivation = "{b.derivation}"', ""]
    atomic.write_text(path, "\n".join(lines))


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
                   help="judge an existing run (any device) instead of training")
    add_run_flags(p, default_epochs=None)
    p.set_defaults(func=cmd_check, backends=None)

    p = sub.add_parser("calibrate", help="run a profile over seeds and derive its loss bands")
    p.add_argument("--profile", default="ci")
    p.add_argument("--seeds", type=seed_list, default=[1, 2, 3, 4, 5])
    p.add_argument("--targets", type=Path, default=TARGETS_FILE)
    p.add_argument("--write", action="store_true", help="write the bands into the targets file")
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

    from harness.console import console
    from harness import results
    profile = get_profile(args.profile, args.targets)
    if args.from_run:
        out, record = args.from_run, results.load(args.from_run)
        seed = record.config.get("seed")
    else:
        config = _profile_config(args, profile, args.seed if args.seed is not None else profile.seed)
        out = args.out or Path("runs") / f"check-{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        record, seed = _run_profile(config, out, args.data_dir, argv, not args.no_probe), config.seed
    findings = evaluate(record, profile)
    table = Table(title=f"check --profile {profile.name} ({profile.epochs} epoch(s), seed {seed})")
    for col in ("backend", "metric", "value", "band", "seed", "result"):
        table.add_column(col)
    for f in findings:
        table.add_row(f.backend, f.metric, "-" if f.value is None else f"{f.value:.3f}", f.band, str(f.seed),
                      "pass" if f.ok else f"[red]FAIL[/red] {f.note}")
    console.print(table)
    failed = [f for f in findings if not f.ok]
    for f in failed:
        value = "-" if f.value is None else f"{f.value:.3f}"
        console.print(f"[red]FAIL[/red] {f.backend} {f.metric} = {value} outside {f.band} (seed {f.seed}) {f.note}")
    console.print(f"results: {out}")
    return 1 if failed else 0


def cmd_calibrate(args, argv) -> int:
    from harness.console import console
    profiles = load_targets(args.targets) if args.targets.exists() else {}
    if args.profile not in profiles:
        raise HarnessError(f"unknown profile {args.profile!r} in {args.targets}")
    profile = profiles[args.profile]
    out = args.out or Path("runs") / f"calibrate-{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    records = []
    for seed in args.seeds:
        config = _profile_config(args, profile, seed)
        records.append(_run_profile(config, out / f"seed-{seed}", args.data_dir, argv, not args.no_probe))
    new = calibrated_profile(dataclasses.replace(profile, backends=tuple(config.backends)), records)
    for m, b in new.bands.items():
        console.print(f"{new.name}.{m}: [{b.low}, {b.high}]  ({b.derivation})")
    console.print(f"{new.name}.max_backend_difference: {new.max_backend_difference} ({new.agreement_derivation})")
    if args.write:
        profiles[new.name] = new
        write_targets(profiles, args.targets)
        console.print(f"written to {args.targets}")
    return 0
