"""Terminal output with rich: a progress bar per backend while a run goes, and the final table."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.execution import caches
from harness.measurement import measure, roofline
from harness.measurement.results import BackendResult, RunRecord
from harness.reporting.roofline_text import latency_line, roofline_line

# Logs and CI have no terminal width; the results table needs more than rich's fallback of 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


class RunProgress:
    """One bar per backend (over all its seeds), added at its first event and advanced on every epoch event."""

    def __init__(self, epochs: int, seeds: int = 1):
        self.epochs, self.seeds = epochs, seeds
        self.done: dict = {}  # (backend, device) -> {seed: epochs finished}
        self.progress = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.tasks: dict = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def on_event(self, result: BackendResult, event: dict) -> None:
        kind = event["event"]
        status = {"started": "starting", "setup": "compiling", "compiled": "training"}.get(kind, result.status)
        if result.epochs:
            e = result.epochs[-1]
            name, value = next(iter(e.metrics.items()))
            status = f"{status}  {name} {value:.2f}  {e.train_seconds:.2f} s/epoch"
        if kind == "compiled":
            status += f"  (compile {event['compile_seconds']:.1f} s)"
        key = (result.backend, result.device)
        if key not in self.tasks:
            label = result.backend + (f" x{self.seeds} seeds" if self.seeds > 1 else "")
            self.tasks[key] = self.progress.add_task(label, total=self.epochs * self.seeds, status="")
        self.done.setdefault(key, {})[result.seed] = len(result.epochs)
        if self.seeds > 1:
            status = f"seed {result.seed}: {status}"
        self.progress.update(self.tasks[key], completed=sum(self.done[key].values()), status=status)


def _fmt(x, spec: str = ".2f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def results_table(record: RunRecord) -> Table:
    """The final table: losses, timings, speed-ups, x roofline and MFU per backend (the caption says why
    when the roofline did not hold)."""
    ref = {r.device: r.summary.get("steady_seconds_per_epoch") for r in record.results
           if r.backend == "torch-reference" and r.summary}
    invalid = roofline.problem(record)
    metrics = record.config.model.spec().metrics
    table = Table(title=f"vae-bench results, {record.config.model.spec().name}, "
                        f"{record.config.precision} ("
                        + "; ".join(f"{m.name}: {m.meaning}" for m in metrics) + ")",
                  caption=" ".join(filter(None, (invalid or roofline_line(record), latency_line(record)))))
    for col in ("backend", "device", "status", "epochs", "train_loss", *(m.name for m in metrics),
                "compile s", "1st epoch s", "steady s/epoch (min-max)", "train samples/s",
                "vs torch-reference", "x roofline", "MFU %"):
        table.add_column(col, justify="left" if col in ("backend", "device", "status") else "right")
    several = len({r.seed for r in record.results}) > 1
    for r in record.results:
        s = r.summary
        last = r.epochs[-1] if r.epochs else None
        steady = measure.seconds_cell(s)
        base = ref.get(r.device)
        speedup = f"{base / s['steady_seconds_per_epoch']:.2f}x" if s and base else "-"
        status = r.status if r.status == "ok" else f"[red]{r.status}[/red]"
        fig = roofline.figures(record.config, record.probe, s, roofline.members(r))
        table.add_row(f"{r.backend} (seed {r.seed})" if several else r.backend, r.device, status, str(len(r.epochs)),
                      _fmt(last and last.train_loss), *(_fmt(last and last.metrics.get(m.name)) for m in metrics),
                      caches.label(r.compile_seconds, r.compile_cache),
                      _fmt(r.first_epoch_seconds), steady,
                      _fmt(s.get("train_samples_per_second"), ",.0f"), speedup,
                      roofline.multiple_cell(s, fig, invalid), roofline.mfu_cell(s, fig))
    return table


def print_failures(record: RunRecord) -> None:
    """One line per backend, status and error: an ensemble that failed as a whole is one line, not N."""
    seeds: dict[tuple, list[int]] = {}
    for r in record.results:
        if r.status != "ok":
            seeds.setdefault((r.backend, r.device, r.status, r.error), []).append(r.seed)
    several = len({r.seed for r in record.results}) > 1
    for (backend, device, status, error), failed in seeds.items():
        which = f" (seed {', '.join(map(str, failed))})" if several else ""
        console.print(f"[red]{backend} on {device}{which}: {status}[/red]: {error}")
