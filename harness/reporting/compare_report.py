"""What `harness compare` shows: the rows of harness.verification.compare as a terminal table and as
Markdown, with the rules they were judged by."""
from __future__ import annotations

from pathlib import Path

from harness.measurement.results import BackendResult
from harness.reporting.console import console
from harness.verification.compare import MIN_RELATIVE_SPEED_CHANGE, Row, Steady

LOSS_MARKS = {1: "▲ worse: changed", -1: "▼ better: changed", 0: "within tolerance", None: "not calibrated"}
SPEED_MARKS = {1: "▲ slower, beyond spread", -1: "▼ faster, beyond spread", 0: "within spread",
               None: "not judged"}


def _status(r: BackendResult | None) -> str:
    return "absent" if r is None else r.status


def _loss_cell(pair: tuple[float | None, float | None]) -> str:
    b, n = pair
    return "-" if b is None or n is None else f"{b:.2f} → {n:.2f} ({n - b:+.2f})"


def _speed_cell(pair: tuple[Steady | None, Steady | None]) -> str:
    b, n = pair
    def one(s: Steady | None) -> str:
        return "-" if s is None else f"{s.median:.3g} ({s.low:.3g}-{s.high:.3g})"
    change = f" ({100 * (n.median / b.median - 1):+.0f}%)" if b and n else ""
    return f"{one(b)} → {one(n)}{change}"


def _loss_mark(flag: int | None, pair: tuple[float | None, float | None]) -> str:
    return "-" if None in pair else LOSS_MARKS[flag]


def table_rows(rows: list[Row]) -> list[dict[str, str]]:
    """Display strings, shared by the terminal table and the markdown file."""
    return [{
        "backend": r.backend, "device": r.device,
        "status": f"{_status(r.base)} → {_status(r.new)}",
        "epoch": "-" if r.epoch is None else str(r.epoch),
        **{k: v for name, pair in r.metrics.items()
           for k, v in ((name, _loss_cell(pair)), (f"{name} change", _loss_mark(r.metric_flags[name], pair)))},
        "loss tolerance": "-" if r.tolerance is None else f"{r.tolerance:g}: {r.tolerance_source}",
        "steady s/epoch (min-max)": _speed_cell(r.speed), "speed change": SPEED_MARKS[r.speed_flag],
    } for r in rows]


def rule_text() -> str:
    return ("Loss, at the last epoch both runs finished: each backend against itself; on a CPU with one "
            "thread any difference is a change (the same code reproduces its losses bit for bit); with more "
            "threads on a CPU, a difference beyond that epoch's calibrated same-seed gap tolerance (the "
            "'loss tolerance' column); elsewhere differences are not calibrated and not judged. Speed: marked when the new steady median lies outside the base run's steady min-max widened by "
            f"the new run's own min-max range, and differs by more than {100 * MIN_RELATIVE_SPEED_CHANGE:g}%.")


def to_markdown(base_dir: Path, new_dir: Path, rows: list[Row]) -> str:
    import pandas as pd
    table = pd.DataFrame(table_rows(rows)).to_markdown(index=False, disable_numparse=True)
    return (f"# vae-bench compare\n\nBase: `{base_dir}`  \nNew: `{new_dir}`\n\n{table}\n\n"
            f"{rule_text()}\n")


def print_table(base_dir: Path, new_dir: Path, rows: list[Row]) -> None:
    from rich.table import Table

    table = Table(title=f"{base_dir} → {new_dir}")
    display = table_rows(rows)
    for col in display[0] if display else ():
        table.add_column(col, justify="left" if col in ("backend", "device", "status") else "right")
    colour = {1: "red", -1: "green"}
    for r, d in zip(rows, display):
        cells = dict(d)
        flags = [(f"{name} change", flag) for name, flag in r.metric_flags.items()]
        for col, flag in [*flags, ("speed change", r.speed_flag)]:
            if flag in colour:
                cells[col] = f"[bold {colour[flag]}]{cells[col]}[/]"
        table.add_row(*cells.values())
    console.print(table)
    console.print(rule_text())


