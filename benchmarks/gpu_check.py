"""Helpers of benchmarks/gpu_check.sh: wait for a run's first epoch, compare two runs' losses, and write
the check's summary.md (with every probed run's roofline and, from the `roofline` step's kernel counts,
full-50's latency floor).

    python benchmarks/gpu_check.py wait-epoch RUN_DIR [--timeout S]
    python benchmarks/gpu_check.py same-losses BASE_RUN NEW_RUN [--rtol R]
    python benchmarks/gpu_check.py summary OUT_DIR --device DEVICE

Reads results.json files only (framework-free, like the harness core).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.errors import HarnessError  # noqa: E402
from harness.execution import caches  # noqa: E402
from harness.measurement import measure, results, roofline  # noqa: E402
from harness.reporting.roofline_text import latency_line, roofline_line  # noqa: E402

LOSSES = ("train_loss", "test_loss", "test_loss_sampled")  # the MLP workload's train loss and test metrics
# (run folder under OUT/runs, backend, what is measured, goal, test on the measured value, format)
GOALS = [
    ("full-50", "torch-compile", "train samples/s, default mode", ">= 500,000", lambda v: v >= 500_000, ",.0f"),
    ("full-50", "jax", "train samples/s", ">= 1,200,000", lambda v: v >= 1_200_000, ",.0f"),
    ("jax-warm-50", "jax", "warm compile s", "<= 1", lambda v: v <= 1.0, ".2f"),
    ("jax-warm-50", "jax", "50-epoch job with a warm cache, s from start to finish", "< 5", lambda v: v < 5.0,
     ".1f"),
    ("full-50", "torch-compile", "cold compile s", "<= 15", lambda v: v <= 15.0, ".1f"),
    ("ensemble-64", "jax", "64 seeds x 50 epochs with a warm cache, s from start to finish", "< 60",
     lambda v: v < 60.0, ".1f"),
]
# Seed-ensemble throughput (issue 25): engine, ensemble size, aggregate train samples/s at least, from
# OUT/ensemble-scaling/scaling.json (benchmarks/ensemble_scaling.py).
ENSEMBLE_GOALS = [("jax", 64, 8_000_000), ("torch-compile", 64, 6_000_000), ("torch", 64, 2_000_000)]


def wait_epoch(run_dir: Path, timeout: float) -> int:
    """0 once some backend of the run has finished an epoch while the run goes on; 1 on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            record = results.load(run_dir)
        except HarnessError:  # not written yet, or being replaced
            record = None
        if record and any(r.epochs for r in record.results):
            return 0
        time.sleep(0.05)
    print(f"{run_dir}: no epoch finished within {timeout:g} s", file=sys.stderr)
    return 1


def loss_differences(base: results.RunRecord, new: results.RunRecord, rtol: float) -> list[str]:
    """Every way in which `new` is not `base` epoch for epoch (statuses, epochs, losses beyond rtol)."""
    problems = []
    for b in base.results:
        n = new.find(b.backend, b.device, b.seed)
        if n is None or (b.status, n.status) != ("ok", "ok"):
            problems.append(f"{b.backend}: status {b.status} vs {n.status if n else 'missing'}")
            continue
        if [e.epoch for e in b.epochs] != [e.epoch for e in n.epochs]:
            problems.append(f"{b.backend}: epochs {len(b.epochs)} vs {len(n.epochs)}")
            continue
        for eb, en in zip(b.epochs, n.epochs):
            for key in LOSSES:
                x, y = eb.value(key), en.value(key)
                if abs(x - y) > rtol * abs(x):
                    problems.append(f"{b.backend} epoch {eb.epoch} {key}: {x!r} vs {y!r}")
    return problems


def same_losses(base_dir: Path, new_dir: Path, rtol: float) -> int:
    problems = loss_differences(results.load(base_dir), results.load(new_dir), rtol)
    for line in problems:
        print(line)
    if not problems:
        print(f"{new_dir} equals {base_dir} epoch for epoch (losses within rtol {rtol:g})")
    return 1 if problems else 0


# ------------------------------------------------------------------------------------------ summary

STEP_FIELDS = ("name", "status", "seconds", "code", "budget", "note")


def read_steps(out: Path) -> list[dict[str, str]]:
    """steps.tsv as dicts of STEP_FIELDS (files of the check before budgets have four columns: no budget
    and no note)."""
    path = out / "steps.tsv"
    if not path.exists():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    return [dict(zip(STEP_FIELDS, row + ["-", ""][max(0, len(row) - 4):])) for row in rows]


def run_records(runs: Path, order: list[str]) -> dict[str, results.RunRecord]:
    """Every run's record by folder name, in the order of the steps that made them."""
    found = {}
    rank = {name: i for i, name in enumerate(order)}
    for path in sorted(runs.glob("*/results.json"), key=lambda p: (rank.get(p.parent.name, len(rank)), p)):
        try:
            found[path.parent.name] = results.load(path.parent)
        except HarnessError:
            pass
    return found


def _fmt(x, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def figures_table(records: dict[str, results.RunRecord]) -> list[str]:
    lines = ["| run | backend | mode | status | epochs | compile s | steady s/epoch | train samples/s | x roofline "
             "| MFU % | final test_loss |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, rec in records.items():
        invalid = roofline.problem(rec)
        for r in rec.results:
            s = r.summary or {}
            fig = roofline.figures(rec.config, rec.probe, s, roofline.members(r))
            mode = rec.config.options(r.backend).get("mode", "-")
            lines.append(f"| {name} | {r.backend} | {mode} | {r.status} | {len(r.epochs)} | "
                         f"{caches.label(r.compile_seconds, r.compile_cache)} | {measure.seconds_cell(s, '.3g')} | "
                         f"{_fmt(s.get('train_samples_per_second'), ',.0f')} | {roofline.multiple_cell(s, fig, invalid)} | "
                         f"{roofline.mfu_cell(s, fig)} | {_fmt(s.get('final_test_loss'), '.2f')} |")
    return lines


def roofline_section(out: Path, records: dict[str, results.RunRecord]) -> list[str]:
    """Every probed run's roofline; full-50's latency floor with the `roofline` step's kernel counts."""
    lines = [f"- {name}: {roofline_line(rec)}" for name, rec in records.items() if rec.probe]
    counted = out / "roofline.json"
    full = records.get("full-50")
    if not counted.exists() or full is None or not full.probe:
        return lines + ["- latency floor: not measured (the roofline step, GPU only, did not leave roofline.json, "
                        "or full-50 has no probe)"]
    probe = json.loads(counted.read_text())
    lines += [f"- {name}: {n:.1f} device operations per step (roofline step)"
              for name, n in (probe.get("kernels_per_step") or {}).items()]
    merged = results.RunRecord(full.config, full.environment, full.results,
                               {**full.probe, **{k: probe[k] for k in ("kernels_per_step", "kernel_seconds") if k in probe}})
    if floor := roofline.latency_floor(merged):
        steady = next(r.summary["steady_seconds_per_epoch"] for r in full.results if r.backend == floor["backend"])
        lines.append(f"- full-50: {latency_line(merged)}; {floor['backend']} trains an epoch in {steady:.3g} s, "
                     f"{steady / floor['seconds']:.2f}x that")
    return lines


def goal_value(records: dict, steps: dict, run: str, backend: str, what: str) -> float | None:
    """The measured value of one goal, or None when its run or backend is missing or did not finish."""
    rec = records.get(run)
    r = next((x for x in rec.results if x.backend == backend), None) if rec else None
    if r is None or r.status != "ok":
        return None
    if what.startswith("train samples/s"):
        return (r.summary or {}).get("train_samples_per_second")
    if what == "warm compile s":
        return r.compile_seconds if r.compile_cache == "warm" else None
    if what == "cold compile s":
        return r.compile_seconds if r.compile_cache == "cold" else None
    step = steps.get(run)
    return float(step["seconds"]) if step and step["status"] == "ok" else None


def ensemble_goal_rows(out: Path, device: str) -> list[str]:
    """The ensemble throughput goals against the scaling benchmark's points (unmeasured without them)."""
    path = out / "ensemble-scaling" / "scaling.json"
    points = json.loads(path.read_text())["points"] if path.exists() else []
    rows = []
    for engine, members, target in ENSEMBLE_GOALS:
        p = next((q for q in points if q["engine"] == engine and q["members"] == members and "skipped" not in q), None)
        value = p["aggregate_samples_per_second"] if p else None
        met = "unmeasured" if value is None else ("n/a on cpu" if device == "cpu" else ("yes" if value >= target else "NO"))
        rows.append(f"| {engine}: ensemble of {members}, aggregate train samples/s (ensemble-scaling) | "
                    f"{_fmt(value, ',.0f')} | >= {target:,} | {met} |")
    return rows


def goals_table(records: dict, steps: dict, device: str, out: Path) -> list[str]:
    lines = ["| goal | measured | target | met |", "|---|---|---|---|"]
    for run, backend, what, target, test, spec in GOALS:
        value = goal_value(records, steps, run, backend, what)
        met = "unmeasured" if value is None else ("n/a on cpu" if device == "cpu" else ("yes" if test(value) else "NO"))
        lines.append(f"| {backend}: {what} ({run}) | {_fmt(value, spec)} | {target} | {met} |")
    lines += ensemble_goal_rows(out, device)
    problems = [p for p in (roofline.problem(rec) for rec in records.values()) if p]
    met = "n/a on cpu" if device == "cpu" else ("NO" if problems else "yes")
    lines.append(f"| no backend below the roofline (every run) | {len(problems)} run(s) below | none | {met} |")
    return lines


def wall_table(records: dict[str, results.RunRecord]) -> list[str]:
    """Where each job's wall time went (results.json `wall_seconds`; runs recorded before it have none)."""
    from harness.measurement.walltime import PARTS
    rows = [(name, r) for name, rec in records.items() for r in rec.results if r.wall_seconds]
    if not rows:
        return ["No run recorded its wall time by part (results.json before `wall_seconds`)."]
    lines = ["| run | backend | " + " | ".join(PARTS) + " | total |", "|---" * (len(PARTS) + 3) + "|"]
    for name, r in rows:
        lines.append(f"| {name} | {r.backend} | " + " | ".join(_fmt(r.wall_seconds.get(k), ".2f") for k in
                                                            (*PARTS, "total")) + " |")
    return lines


def summary(out: Path, device: str) -> int:
    steps = read_steps(out)
    records = run_records(out / "runs", [s["name"] for s in steps])
    env = next(iter(records.values())).environment if records else {}
    gpus = ", ".join(g.get("name", "?") for g in env.get("gpus", [])) or "none"
    failed = [s["name"] for s in steps if s["status"] not in ("ok", "skipped")]
    skipped = [f"{s['name']} ({s['note']})" for s in steps if s["status"] == "skipped"]
    over = [s["name"] for s in steps if s["status"] == "over-budget"]
    verdict = "every step run passed" if not failed else "FAILED: " + ", ".join(failed)
    ran = [s for s in steps if s["status"] != "skipped"]
    budgets = [float(s["budget"]) for s in ran if s["budget"] not in ("-", "0")]
    lines = [f"# GPU check: {verdict}", "",
             f"Device `{device}`; GPUs: {gpus}; commit {env.get('git', {}).get('commit') or 'unknown'}; "
             f"packages: {json.dumps(env.get('packages', {}))}", "",
             f"Skipped: {', '.join(skipped) or 'none'}. Over budget: {', '.join(over) or 'none'}. Steps run: "
             f"{sum(float(s['seconds']) for s in ran):.1f} s (their budgets: "
             f"{f'{sum(budgets):.0f} s' if budgets else 'none'}).", "",
             "## Steps", "", "| step | status | seconds | budget s | exit code | note | log |",
             "|---|---|---|---|---|---|---|"]
    for s in steps:
        log = "-" if s["status"] == "skipped" else f"logs/{s['name']}.log"
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']} | {s['budget']} | {s['code']} | "
                     f"{s['note'] or '-'} | {log} |")
    lines += ["", "## Figures (every run under runs/)", "", *figures_table(records), "",
              "## Where each job's wall time went (seconds)", "", *wall_table(records), "",
              "## Goals of the GPU path (issues 14, 25 and 27; H100/H200, float32, TF32 off)", "",
              *goals_table(records, {s["name"]: s for s in steps}, device, out), ""]
    problems = [f"- {name}: {p}" for name, rec in records.items() if (p := roofline.problem(rec))]
    lines += ["## Roofline and latency floor", "", *problems, *roofline_section(out, records), ""]
    (out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("wait-epoch")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--timeout", type=float, default=600.0)
    p = sub.add_parser("same-losses")
    p.add_argument("base", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--rtol", type=float, default=0.0)
    p = sub.add_parser("summary")
    p.add_argument("out", type=Path)
    p.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    try:
        if args.command == "wait-epoch":
            return wait_epoch(args.run_dir, args.timeout)
        if args.command == "same-losses":
            return same_losses(args.base, args.new, args.rtol)
        return summary(args.out, args.device)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
