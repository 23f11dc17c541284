"""How often does `harness check` catch a real error, and how often does it cry wolf?

Takes the held-out runs (seeds the calibration never saw, listed in each profile's `held_out_seeds`),
plants shifts of 0.25, 0.5 and 1.0 into ONE backend's primary metric (both signs, each backend in turn)
and judges every planted copy exactly as `check --from` does (harness.verification.check.evaluate):

- single: the shift at one epoch e only (every e of the profile);
- window: the shift over the 10 epochs e..e+9 (a persistent error that later goes away);
- onward: the shift from epoch e to the last epoch.

Detection rate = the share of planted copies that check fails. False alarms: the unshifted held-out runs,
and each calibration seed judged by a profile recalibrated without it (leave-one-seed-out).

    python benchmarks/check_power.py --out reports/check-power RUN_DIR [RUN_DIR ...]

Writes OUT/power.json and OUT/README.md (tables and the goals met or not) and OUT/power.png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import atomic  # noqa: E402
from harness.measurement import results  # noqa: E402
from harness.verification import calibration, check  # noqa: E402
from harness.verification.targets import load_targets  # noqa: E402

SHIFTS = (0.25, 0.5, 1.0)
WIDTH = 10
GOALS = (("single", 1.0, 0.95), ("window", 0.5, 0.95))  # (kind, shift, detection at least)
MAX_FALSE_ALARM = 0.01


def plants(epochs: int) -> list[tuple[str, int, range]]:
    """(kind, first epoch, shifted epochs) of every planted error in a run of `epochs` epochs."""
    out = [("single", e, range(e, e + 1)) for e in range(1, epochs + 1)]
    out += [("window", e, range(e, e + WIDTH)) for e in range(1, epochs - WIDTH + 2)]
    out += [("onward", e, range(e, epochs + 1)) for e in range(1, epochs + 1)]
    return out


def detected(record, profile, backend: str, shift: float, span: range) -> bool:
    """Does check fail `record` with `shift` added to `backend`'s primary metric at the epochs of `span`?"""
    result = next(r for r in record.results if r.backend == backend)
    touched = [e for e in result.epochs if e.epoch in span]
    name = next(iter(touched[0].metrics)) if touched else None
    for e in touched:
        e.metrics[name] += shift
    try:
        return bool(check.evaluate(record, profile).failed)
    finally:
        for e in touched:
            e.metrics[name] -= shift


def power(profile, records: list) -> list[dict]:
    """Detection rate per (kind, shift) over every held-out record, backend, sign and position."""
    rows = []
    for kind in ("single", "window", "onward"):
        for shift in SHIFTS:
            hits = total = 0
            for record in records:
                for where in plants(profile.epochs):
                    if where[0] != kind:
                        continue
                    for r in record.results:
                        for sign in (1, -1):
                            hits += detected(record, profile, r.backend, sign * shift, where[2])
                            total += 1
            if total:
                rows.append({"profile": profile.name, "kind": kind, "shift": shift, "detected": hits, "cases": total})
    return rows


def false_alarms(profile, records: list, calibration_runs: list) -> dict:
    """Unshifted held-out runs, and leave-one-seed-out checks of the calibration seeds."""
    held = [bool(check.evaluate(rec, profile).failed) for rec in records]
    loso = []
    by_seed: dict[int, list] = {}
    for folder, rec in calibration_runs:
        by_seed.setdefault(rec.config.seed, []).append((folder, rec))
    for seed, own in by_seed.items():
        rest = [fr for s, fr_list in by_seed.items() if s != seed for fr in fr_list]
        refit = calibration.calibrated_profile(profile, rest)
        loso += [bool(check.evaluate(rec, refit).failed) for _, rec in own]
    return {"profile": profile.name, "held_out_checks": len(held), "held_out_alarms": sum(held),
            "leave_one_out_checks": len(loso), "leave_one_out_alarms": sum(loso)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="held-out run folders (results.json)")
    ap.add_argument("--profiles", default="ci,full")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--targets", type=Path, default=None, help="default: harness/verification/targets.toml")
    args = ap.parse_args()
    profiles = load_targets(args.targets)
    records = [results.load(d) for d in args.runs]
    report = {"runs": [str(d) for d in args.runs], "power": [], "false_alarms": [], "tolerances": {}}
    start = time.perf_counter()
    for name in args.profiles.split(","):
        profile = profiles[name]
        held = set(profile.calibration.get("held_out_seeds", []))
        mine = [r for r in records if r.config.seed in held and r.config.epochs >= profile.epochs]
        if not mine:
            print(f"{name}: no held-out run given for seeds {sorted(held)}", file=sys.stderr)
            return 2
        calib = [(f, results.load(ROOT / f)) for f in profile.calibration["runs"]]
        report["power"] += power(profile, mine)
        report["false_alarms"].append(false_alarms(profile, mine, calib))
        report["tolerances"][name] = {e: {"gap": t.max_backend_difference, "window": t.window_tolerance}
                                      for e, t in profile.per_epoch.items() if e in (1, 5, 10, 20, 30, 40, 50)}
        print(f"{name}: {len(mine)} held-out runs judged", file=sys.stderr)
    report["seconds"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "power.json", json.dumps(report, indent=1))
    from benchmarks.check_power_report import write_report
    write_report(report, args.out, GOALS, MAX_FALSE_ALARM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
