"""`python -m harness report RUN_DIR [RUN_DIR ...] -o OUT_DIR`: report.md and its figures.

Built from each run's `results.json` and the saved `<backend>/params.npz` alone, so a report can be
rebuilt at any time, on any machine with MNIST, without torch or jax. Several run folders (say a CPU run
and a GPU run) merge into one report with one summary table per device.

Sections, in the order a reader wants them: verdict, summary tables, loss curves, throughput,
reconstructions and samples, ceilings (the probe), environment, the command that reproduces the run. This
module writes the verdict and the run's context (ceilings, environment, reproduce) and assembles report.md; the
entries are harness/reporting/entries.py, the summary tables harness/reporting/summary_table.py, the
figure sections harness/reporting/figure_sections.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import atomic
from harness.errors import HarnessError
from harness.measurement import measure, results
from harness.measurement.results import RunRecord
from harness.reporting.entries import (REFERENCE_BACKEND, Entry, baseline, by_device, load_entries, one_line,
                                       steady_seconds)
from harness.reporting.figure_sections import figure_sections
from harness.reporting.roofline_text import ceilings_section
from harness.reporting.summary_table import summary_frame
from harness.reporting.summary_table import summary_section as _summary_section  # its name here before the split
from harness.reporting.verdict_text import gap_table
from harness.reporting.verdict_text import sentences as verdict_sentences

# What importers read as report.<name>; Entry, load_entries and summary_frame are re-exported from the
# modules they live in, so callers that knew them here keep working.
__all__ = ["REPORT_FILE", "Entry", "load_entries", "summary_frame", "verdict", "write_report"]

REPORT_FILE = "report.md"


# ---------------------------------------------------------------- verdict

def _speed_sentences(entries: list[Entry]) -> list[str]:
    out = []
    for device, group in by_device(entries).items():
        timed = sorted((e for e in group if e.result.status == "ok" and steady_seconds(e.result)),
                       key=lambda e: steady_seconds(e.result))
        if not timed:
            continue
        best = timed[0]
        s = best.result.summary
        basis = "" if measure.basis_of(s) == "steady" else ", first epoch: a 1-epoch run has no steady state"
        text = (f"On **{device}**, **{best.label}** is fastest at {s['steady_seconds_per_epoch']:.3g} "
                f"s/epoch ({s['train_samples_per_second']:,.0f} train samples/s{basis})")
        if len(timed) > 1:
            nxt = timed[1]
            ns = nxt.result.summary
            ratio = ns["steady_seconds_per_epoch"] / s["steady_seconds_per_epoch"]
            # Beyond spread: its slowest steady epoch still beats the runner-up's fastest.
            clear = s["steady_seconds_max"] < ns["steady_seconds_min"]
            text += (f", {ratio:.2f}x the speed of the next fastest, {nxt.label} "
                     f"({ns['steady_seconds_per_epoch']:.3g} s/epoch; "
                     f"{'beyond' if clear else 'within'} the epoch-to-epoch spread)")
        else:
            text += ", the only backend timed on this device"
        ref = baseline(best, group, REFERENCE_BACKEND)
        if ref is not None and ref not in timed[:2]:  # not already named above
            text += (f", {steady_seconds(ref.result) / s['steady_seconds_per_epoch']:.2f}x the speed of "
                     f"{REFERENCE_BACKEND}")
        out.append(text + ".")
    return out


def verdict(entries: list[Entry]) -> str:
    """One paragraph: agreement, the fastest backend per device, failures, and how short the run was."""
    parts = verdict_sentences(entries) or [
        "No two backends finished a common epoch in one experiment (same seed, device kind, model config, "
        "precision, data limits and noise source), so agreement cannot be judged."]
    parts += _speed_sentences(entries) or ["No backend finished a timed steady epoch."]
    failed = [e for e in entries if e.result.status != "ok"]
    if failed:
        parts.append("**Not ok:** " + "; ".join(
            f"{e.label} {e.result.status} ({one_line(e.result.error)})" for e in failed) + ".")
    else:
        parts.append("Every backend finished every epoch.")
    short = {(e.record.config.train_limit, e.record.config.test_limit) for e in entries}
    for train, test in sorted(short, key=str):
        if train or test:
            parts.append(f"This run used {train or 'all'} training and {test or 'all'} test samples, so its "
                         "losses are not comparable with the full-MNIST reference values.")
    return " ".join(parts)


# ---------------------------------------------------------------- run context and the markdown

def _kv_block(d: dict[str, Any]) -> list[str]:
    def show(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return ["```text", *(f"{k}: {show(v)}" for k, v in d.items() if v not in (None, [], {}, "")), "```", ""]


def _environment_lines(record: RunRecord) -> dict[str, Any]:
    env, cfg = record.environment, record.config
    git = env.get("git") or {}
    gpus = "; ".join(f"{g.get('name')} ({g.get('memory')}, driver {g.get('driver')})" for g in env.get("gpus", []))
    out = {
        "harness": env.get("harness_version"), "python": env.get("python"), "platform": env.get("platform"),
        "cpu": f"{env.get('cpu')} ({env.get('cores')} cores; {' '.join(env.get('cpu_flags', []))})",
        "gpus": gpus or "none",
        "packages": ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v),
        "environment variables": ", ".join(f"{k}={v}" for k, v in (env.get("env") or {}).items() if v) or "none set",
        "git": f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}" if git.get("commit") else "unknown",
        "run": (f"device {cfg.device}, seed {cfg.seed}, {cfg.epochs} epochs, "
                f"{cfg.threads} threads, precision {cfg.precision}, workload "
                f"{cfg.model.spec().name}, engine options {cfg.engine_options or 'none'}, train/test limit {cfg.train_limit or 'all'}/"
                f"{cfg.test_limit or 'all'}, timeout {cfg.timeout} s, target {cfg.target_loss}"),
        "model": ", ".join(f"{k} {v}" for k, v in cfg.model.to_dict().items()),
    }
    for r in record.results:
        if r.backend_info or r.threads:
            info = ", ".join(f"{k} {v}" for k, v in r.backend_info.items())
            out[f"backend {r.backend}"] = f"{r.threads} threads; {info}"
    return out


def _tail_sections(loaded: list[tuple[Path, RunRecord]], run_dirs: list[Path], out_dir: Path) -> list[str]:
    lines: list[str] = []
    lines += ceilings_section(loaded)  # the probe's ceilings, the roofline and how each was measured
    lines += ["## Environment", ""]
    for d, rec in loaded:
        lines += [f"Run `{d}`:", "", *_kv_block(_environment_lines(rec))]
    lines += ["## Reproduce", "", "The exact command of each run:", "", "```bash"]
    lines += [rec.command or f"# {d}: no command recorded" for d, rec in loaded]
    lines += ["```", "", "Rebuild this report from the saved results:", "", "```bash",
              "python -m harness report " + " ".join(str(d) for d in run_dirs) + f" -o {out_dir}", "```", ""]
    return lines


def write_report(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write OUT_DIR/report.md and OUT_DIR/figures/*.png from the runs' saved results; return report.md."""
    run_dirs = [Path(d) for d in run_dirs]
    out_dir = Path(out_dir)
    loaded = [(d, results.load(d)) for d in run_dirs]  # every folder checked before anything is written
    entries = load_entries(loaded)
    if not entries:
        raise HarnessError(f"{', '.join(map(str, run_dirs))}: no backend results to report")
    title = ", ".join(sorted({e.result.device for e in entries}))
    names = ", ".join(sorted({f"{e.record.config.model.spec().name}, {e.record.config.precision}"
                              for e in entries}))
    lines = [f"# vae-bench report: {names} ({title})", "",
             "From: " + ", ".join(f"`{d / results.RESULTS_FILE}`" for d in run_dirs), "",
             "## Verdict", "", verdict(entries), "", *gap_table(entries)]
    lines += _summary_section(entries)
    path = out_dir / REPORT_FILE
    try:
        lines += figure_sections(entries, out_dir)
        lines += _tail_sections(loaded, run_dirs, out_dir)
        atomic.write_text(path, "\n".join(lines))
    except OSError as exc:
        raise HarnessError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    return path
