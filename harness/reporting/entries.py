"""The rows of report.md: one Entry per backend result of each run, and the comparisons every section shares.

Several run folders (say a CPU run and a GPU run) merge into one list of entries; the verdict, the
summary tables and the figures all read it, grouped by device, with speed-ups over a baseline backend.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.measurement.results import BackendResult, RunRecord

REFERENCE_BACKEND = "torch-reference"  # the pytorch/examples loop users know: the speed-up baseline


@dataclass(frozen=True, eq=False)  # identity: two runs may hold equal-looking results
class Entry:
    """One backend result, the run it came from, and the label it carries in tables and figures."""

    run_dir: Path
    record: RunRecord
    result: BackendResult
    label: str

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")


def load_entries(loaded: list[tuple[Path, RunRecord]]) -> list[Entry]:
    """Every backend result of every loaded run, labelled uniquely (backend and device, seed/run if needed)."""
    pairs = [(d, rec, r) for d, rec in loaded for r in rec.results]
    several_seeds = len({r.seed for _, _, r in pairs}) > 1
    labels = [f"{r.backend} ({r.device}{f', seed {r.seed}' if several_seeds else ''})" for _, _, r in pairs]
    # The same backend on the same device in two runs: the run folder tells them apart.
    labels = [f"{lab} [{d.name}]" if labels.count(lab) > 1 else lab for lab, (d, _, _) in zip(labels, pairs)]
    return [Entry(d, rec, r, lab) for lab, (d, rec, r) in zip(labels, pairs)]


def steady_seconds(r: BackendResult) -> float | None:
    return r.summary.get("steady_seconds_per_epoch") if r.summary else None


def by_device(entries: list[Entry]) -> dict[str, list[Entry]]:
    groups: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        groups[e.result.device].append(e)
    return dict(groups)


def baseline(entry: Entry, group: list[Entry], backend: str) -> Entry | None:
    """The `backend` entry to divide by: same device, preferably the same run and seed."""
    cands = [e for e in group if e.result.backend == backend and steady_seconds(e.result)]
    cands.sort(key=lambda e: (e.run_dir != entry.run_dir, e.result.seed != entry.result.seed))
    return cands[0] if cands else None


def one_line(text: str | None) -> str:
    """An error message as the report shows it: on one line, never empty."""
    return " ".join((text or "no error recorded").split())
