"""The Summary section of report.md: one table per device, with speed-ups, x roofline, MFU and failure notes.

`summary_frame` is the table itself (a pandas DataFrame of display strings); `summary_section` the
markdown around it: what the columns mean, one table per device, each run's roofline, the evaluation
notes, invalid rooflines and the stderr tail of every backend that did not finish.
"""
from __future__ import annotations

from harness.execution import caches
from harness.measurement import measure, roofline
from harness.measurement.results import finite_epochs
from harness.reporting import evaluation_report
from harness.reporting.entries import REFERENCE_BACKEND, Entry, baseline, by_device, one_line, steady_seconds
from harness.reporting.roofline_text import COLUMNS, latency_line, roofline_line

MIB = 2.0**20


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _speedup(entry: Entry, group: list[Entry], backend: str) -> str:
    base, own = baseline(entry, group, backend), steady_seconds(entry.result)
    return f"{steady_seconds(base.result) / own:.2f}x" if base and own else "-"


def summary_frame(group: list[Entry]):
    """The per-device summary table as a pandas DataFrame of display strings."""
    import pandas as pd

    rows = []
    for e in group:
        r, s = e.result, e.result.summary or {}
        last = (finite_epochs(r) or [None])[-1]
        steady = measure.seconds_cell(s, ".3g")
        if "target_loss" in s:
            tt = s.get("time_to_target_seconds")
            target = f"{tt:.1f} (< {s['target_loss']:g})" if tt is not None else f"not reached (< {s['target_loss']:g})"
        else:
            target = "-"
        rss, dev = r.memory.get("peak_rss_bytes"), r.memory.get("device_peak_bytes")
        fig = roofline.figures(e.record.config, e.record.probe, s, roofline.members(r))
        rows.append({
            "backend": r.backend if len({x.result.backend for x in group}) == len(group) else e.label,
            "status": r.status,
            "epochs": str(len(r.epochs)),
            **{f"final {m.name}": _fmt(last and last.metrics.get(m.name)) for m in e.record.config.model.spec().metrics},
            "compile s": caches.label(r.compile_seconds, r.compile_cache),
            "first epoch s": _fmt(r.first_epoch_seconds),
            "steady s/epoch (min-max)": steady,
            "train samples/s": _fmt(s.get("train_samples_per_second"), ",.0f"),
            f"vs {REFERENCE_BACKEND}": _speedup(e, group, REFERENCE_BACKEND),
            "vs torch": _speedup(e, group, "torch"),
            "time to target s": target,
            "peak RSS MiB": _fmt(rss and rss / MIB, ",.0f"),
            "device peak MiB": _fmt(dev and dev / MIB, ",.0f"),
            "x roofline": roofline.multiple_cell(s, fig, roofline.problem(e.record)),
            "MFU %": roofline.mfu_cell(s, fig),
            "x torch products": roofline.products_cell(fig),
        })
    frame = pd.DataFrame(rows)
    iwae = evaluation_report.iwae_column([e.result for e in group])
    if iwae:  # beside the test metrics, only when `harness evaluate` has run
        frame.insert(3 + len(group[0].record.config.model.spec().metrics), *iwae)
    return frame


def summary_section(entries: list[Entry]) -> list[str]:
    metrics = entries[0].record.config.model.spec().metrics
    lines = ["## Summary", "",
             " ".join(f"{m.name}: {m.meaning}." for m in metrics) + " Steady = epochs after the first: median seconds per epoch (min-max). Speed-ups divide "
             "the baseline's steady median by the backend's, on the same device; '-' when either is absent. "
             f"Time to target: seconds from the start of the job (compile included) until {metrics[0].name} first "
             f"fell below the target. {COLUMNS} Compile s: the warm-up of every shape; '(cold)' when it compiled programs "
             "from scratch (empty caches, or --cold-compile), '(warm)' when every program came from the "
             "persistent compile cache. Memory: peak resident set of the backend's process "
             "and, on GPUs, peak device memory allocated.",
             ""]
    for device, group in by_device(entries).items():
        lines += [f"### Device: {device}", "", summary_frame(group).to_markdown(index=False, disable_numparse=True),
                  ""]
    lines += evaluation_report.summary_notes([e.result for e in entries])  # when `harness evaluate` has run
    runs = {e.run_dir: e.record for e in entries}
    for run_dir, record in runs.items():
        if why := roofline.problem(record):
            lines += [f"**Roofline invalid** (run `{run_dir}`): {why}.", ""]
        else:
            lines += [f"Run `{run_dir}`: " + "; ".join(filter(None, (roofline_line(record), latency_line(record))))
                      + ".", ""]
    failed = [e for e in entries if e.result.status != "ok"]
    if failed:
        lines += ["### Failures", ""]
        for e in failed:
            lines.append(f"- **{e.label}**: {e.result.status}: {one_line(e.result.error)}")
            tail = (e.result.stderr_tail or "").strip().splitlines()[-8:]
            if tail:
                lines += ["", "  ```text", *(f"  {t}" for t in tail), "  ```", ""]
        lines.append("")
    return lines
