"""The power study's README.md and figure, from its power.json (benchmarks/check_power.py)."""
from __future__ import annotations

from pathlib import Path

from harness import atomic

KIND_TEXT = {"single": "at one epoch", "window": "over 10 epochs, then gone", "onward": "from an epoch to the last"}


def _rate(hits: int, cases: int) -> str:
    return f"{hits / cases:.1%} ({hits}/{cases})"


def write_report(report: dict, out: Path, goals, max_false_alarm: float) -> None:
    """OUT/README.md with the detection and false-alarm tables and the goals met or not; OUT/power.png."""
    lines = ["# Power of `harness check`", "",
             "Written by `benchmarks/check_power.py` from the held-out runs below (seeds no calibration saw). "
             "Each planted copy shifts ONE backend's primary metric (test_loss) by the given nats, both signs, "
             "every backend in turn, at every position; a copy counts as detected when `check` fails it.", "",
             "| profile | shift | planted | detected |", "|---|---|---|---|"]
    for row in report["power"]:
        lines.append(f"| {row['profile']} | {row['shift']:g} nats | {KIND_TEXT[row['kind']]} | "
                     f"{_rate(row['detected'], row['cases'])} |")
    lines += ["", "False alarms (unshifted runs):", "", "| profile | held-out runs failed | leave-one-seed-out failed |",
              "|---|---|---|"]
    for fa in report["false_alarms"]:
        lines.append(f"| {fa['profile']} | {_rate(fa['held_out_alarms'], fa['held_out_checks'])} | "
                     f"{_rate(fa['leave_one_out_alarms'], fa['leave_one_out_checks'])} |")
    lines += ["", "Leave-one-seed-out: each calibration seed judged by the profile recalibrated without it. "
              "With n checks and no alarm, the 95 % upper bound of the false-alarm rate is about 3/n.", "",
              "## Goals", ""]
    for kind, shift, want in goals:
        rows = [r for r in report["power"] if r["kind"] == kind and r["shift"] == shift]
        for r in rows:
            rate = r["detected"] / r["cases"]
            lines.append(f"- {r['profile']}: a {shift:g}-nat shift {KIND_TEXT[kind]} caught in {rate:.1%} "
                         f"(goal {want:.0%}): {'met' if rate >= want else '**not met**'}")
    for fa in report["false_alarms"]:
        n = fa["held_out_checks"] + fa["leave_one_out_checks"]
        alarms = fa["held_out_alarms"] + fa["leave_one_out_alarms"]
        if n >= 300:
            verdict = "met" if alarms <= max_false_alarm * n else "**not met**"
        else:  # too few checks to confirm a 1 % rate: say what was seen and what the design promises
            verdict = ("no alarm seen, consistent with the design bound" if alarms == 0 else "**alarms seen**") + \
                f"; {n} checks alone bound the rate only below {3 / n:.0%} (95 %), the 1 % is the statistics' design"
        lines.append(f"- {fa['profile']}: false alarms {alarms} of {n} unshifted checks (goal at most "
                     f"{max_false_alarm:.0%}): {verdict}")
    lines += ["", "## Tolerances at some epochs", "", "| profile | epoch | gap tolerance | 10-epoch mean gap tolerance |",
              "|---|---|---|---|"]
    for name, per in report["tolerances"].items():
        for epoch, t in per.items():
            window = "-" if t["window"] is None else f"{t['window']:g}"
            lines.append(f"| {name} | {epoch} | {t['gap']:g} | {window} |")
    lines += ["", "Held-out runs:", ""] + [f"- `{r}`" for r in report["runs"]]
    lines += ["", f"The study took {report['seconds']} s.", "", "![detection rate](power.png)", ""]
    atomic.write_text(out / "README.md", "\n".join(lines))
    _figure(report, out / "power.png")


def _figure(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for profile in sorted({r["profile"] for r in report["power"]}):
        for kind in KIND_TEXT:
            rows = sorted((r for r in report["power"] if r["profile"] == profile and r["kind"] == kind),
                          key=lambda r: r["shift"])
            if rows:
                ax.plot([r["shift"] for r in rows], [r["detected"] / r["cases"] for r in rows], marker="o",
                        label=f"{profile}: {KIND_TEXT[kind]}")
    ax.set_xlabel("planted shift of one backend's test_loss (nats)")
    ax.set_ylabel("share of copies check fails")
    ax.set_ylim(0, 1.02)
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
