"""What `harness check` prints: one row per judged series (a backend's metric, a pair's gap) with its
worst epoch, every failure on its own line, and what was not judged and why."""
from __future__ import annotations

from collections import defaultdict

from rich.markup import escape
from rich.table import Table

from harness.reporting.console import console
from harness.verification.check import Finding, Judgement


def _closeness(f: Finding) -> float:
    """How far into its limit a value is: 0 at a band's centre or a zero gap, 1 at the limit."""
    if f.value is None:
        return float("inf")
    if f.band.startswith("<="):
        limit = float(f.band[2:])
        return f.value / limit if limit else float("inf")
    low, high = (float(x) for x in f.band.strip("[]").split(","))
    half = (high - low) / 2
    return abs(f.value - (low + high) / 2) / half if half else float("inf")


def print_judgement(j: Judgement, title: str) -> None:
    """The summary table, failures, warnings and the not-judged lines of one check."""
    series: dict[tuple, list[Finding]] = defaultdict(list)
    for f in j.findings:
        series[(f.seed, f.backend, f.metric)].append(f)
    table = Table(title=title)
    for col in ("seed", "backend", "metric", "epochs", "worst epoch", "value", "limit", "result"):
        table.add_column(col)
    for (seed, who, metric), fs in series.items():
        worst = max(fs, key=_closeness)
        bad = [f for f in fs if not f.ok]
        result = "pass" if not bad else f"[red]FAIL[/red] {len(bad)} epoch(s)"
        value = "-" if worst.value is None else f"{worst.value:.3f}"
        table.add_row(str(seed), who, metric, f"{min(f.epoch for f in fs)}-{max(f.epoch for f in fs)}",
                      str(worst.epoch), value, worst.band, result)
    console.print(table)
    for f in j.failed:
        value = "-" if f.value is None else f"{f.value:.3f}"
        console.print(f"FAIL {escape(f.backend)} {f.metric} at epoch {f.epoch} = {value} outside {f.band} "
                      f"(seed {f.seed}) {escape(f.note)}", soft_wrap=True)
    for w in j.warnings:
        console.print(f"[yellow]warning[/yellow]: {escape(w)}", soft_wrap=True)
    for n in j.not_judged:
        console.print(f"[yellow]not judged[/yellow]: {escape(n)}", soft_wrap=True)
    console.print(f"judged {j.judged} value(s) of epochs 1-{j.epochs} against profile {j.profile!r}: "
                  f"{len(j.failed)} failed")
