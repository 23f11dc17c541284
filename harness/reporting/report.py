"""`python -m harness report RUN_DIR [RUN_DIR ...] -o OUT_DIR`: report.md and its figures.

Built from each run's `results.json` and the saved `<backend>/params.npz` alone (reconstructions and
samples are decoded in NumPy by harness.verification.reference, never by the backend that trained them), so a report
can be rebuilt at any time, on any machine with MNIST, without torch or jax. Several run folders (say a
CPU run and a GPU run) merge into one report with one summary table per device.

Sections, in the order a reader wants them: verdict, summary tables, loss curves, throughput,
reconstructions and samples, probe, environment, the command that reproduces the run.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import atomic
from harness.config import ModelConfig, RunConfig
from harness.errors import HarnessError
from harness.execution import caches
from harness.measurement import floor, measure, results
from harness.measurement.results import BackendResult, RunRecord, finite_epochs, workload_of
from harness.reporting import evaluation_report
from harness.verification.verdict import calibrated_bands, gap_table
from harness.verification.verdict import sentences as verdict_sentences

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
REFERENCE_BACKEND = "torch-reference"  # the pytorch/examples loop users know: the speed-up baseline

N_DIGITS = 8          # the first N test digits, the same for every backend so grids compare side by side
SAMPLE_SEED = 0       # z ~ N(0, I) from np.random.default_rng(SAMPLE_SEED): the same z for every backend
SAMPLE_ROWS, SAMPLE_COLS = 4, 8
MIB = 2.0**20


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


# ---------------------------------------------------------------- loading and shared numbers

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


def max_difference(a: BackendResult, b: BackendResult) -> tuple[float, int] | None:
    """Largest |difference| of the primary test metric over the epochs both finished, and its epoch."""
    la = {e.epoch: e.primary for e in finite_epochs(a)}
    lb = {e.epoch: e.primary for e in finite_epochs(b)}
    common = sorted(set(la) & set(lb))
    if not common:
        return None
    return max((abs(la[k] - lb[k]), k) for k in common)


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _one_line(text: str | None) -> str:
    return " ".join((text or "no error recorded").split())


# ---------------------------------------------------------------- verdict

def _speed_sentences(entries: list[Entry]) -> list[str]:
    out = []
    for device, group in _by_device(entries).items():
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
        ref = _baseline(best, group, REFERENCE_BACKEND)
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
            f"{e.label} {e.result.status} ({_one_line(e.result.error)})" for e in failed) + ".")
    else:
        parts.append("Every backend finished every epoch.")
    short = {(e.record.config.get("train_limit"), e.record.config.get("test_limit")) for e in entries}
    for train, test in sorted(short, key=str):
        if train or test:
            parts.append(f"This run used {train or 'all'} training and {test or 'all'} test samples, so its "
                         "losses are not comparable with the full-MNIST reference values.")
    return " ".join(parts)


# ---------------------------------------------------------------- summary tables

def _by_device(entries: list[Entry]) -> dict[str, list[Entry]]:
    groups: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        groups[e.result.device].append(e)
    return dict(groups)


def _baseline(entry: Entry, group: list[Entry], backend: str) -> Entry | None:
    """The `backend` entry to divide by: same device, preferably the same run and seed."""
    cands = [e for e in group if e.result.backend == backend and steady_seconds(e.result)]
    cands.sort(key=lambda e: (e.run_dir != entry.run_dir, e.result.seed != entry.result.seed))
    return cands[0] if cands else None


def _speedup(entry: Entry, group: list[Entry], backend: str) -> str:
    base, own = _baseline(entry, group, backend), steady_seconds(entry.result)
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
        frac = s.get("fraction_of_peak")
        rows.append({
            "backend": r.backend if len({x.result.backend for x in group}) == len(group) else e.label,
            "status": r.status,
            "epochs": str(len(r.epochs)),
            **{f"final {m.name}": _fmt(last and last.metrics.get(m.name)) for m in workload_of(e.record.config).metrics},
            "compile s": caches.label(r.compile_seconds, r.compile_cache),
            "first epoch s": _fmt(r.first_epoch_seconds),
            "steady s/epoch (min-max)": steady,
            "train samples/s": _fmt(s.get("train_samples_per_second"), ",.0f"),
            f"vs {REFERENCE_BACKEND}": _speedup(e, group, REFERENCE_BACKEND),
            "vs torch": _speedup(e, group, "torch"),
            "time to target s": target,
            "peak RSS MiB": _fmt(rss and rss / MIB, ",.0f"),
            "device peak MiB": _fmt(dev and dev / MIB, ",.0f"),
            "% of probed peak": _fmt(frac and 100 * frac, ".1f"),
            "x floor": floor.multiple_cell(s, floor.problem(e.record.results)),
        })
    frame = pd.DataFrame(rows)
    iwae = evaluation_report.iwae_column([e.result for e in group])
    if iwae:  # beside the test metrics, only when `harness evaluate` has run
        frame.insert(3 + len(workload_of(group[0].record.config).metrics), *iwae)
    return frame


def _summary_section(entries: list[Entry]) -> list[str]:
    metrics = workload_of(entries[0].record.config).metrics
    lines = ["## Summary", "",
             " ".join(f"{m.name}: {m.meaning}." for m in metrics) + " Steady = epochs after the first: median seconds per epoch (min-max). Speed-ups divide "
             "the baseline's steady median by the backend's, on the same device; '-' when either is absent. "
             f"Time to target: seconds from the start of the job (compile included) until {metrics[0].name} first "
             "fell below the target. '% of probed peak': training GFLOP/s over the probe's matmul peak; 'x floor': "
             "steady s/epoch over the probe's per-epoch floor ('invalid' when a backend of the run came out below "
             "it, see below). Compile s: the warm-up of every shape; '(cold)' when it compiled programs "
             "from scratch (empty caches, or --cold-compile), '(warm)' when every program came from the "
             "persistent compile cache. Memory: peak resident set of the backend's process "
             "and, on GPUs, peak device memory allocated.",
             ""]
    for device, group in _by_device(entries).items():
        lines += [f"### Device: {device}", "", summary_frame(group).to_markdown(index=False, disable_numparse=True),
                  ""]
    lines += evaluation_report.summary_notes([e.result for e in entries])  # when `harness evaluate` has run
    invalid = {e.run_dir: floor.problem(e.record.results) for e in entries}
    for run_dir, why in invalid.items():
        if why:
            lines += [f"**Floor invalid** (run `{run_dir}`): {why}.", ""]
    failed = [e for e in entries if e.result.status != "ok"]
    if failed:
        lines += ["### Failures", ""]
        for e in failed:
            lines.append(f"- **{e.label}**: {e.result.status}: {_one_line(e.result.error)}")
            tail = (e.result.stderr_tail or "").strip().splitlines()[-8:]
            if tail:
                lines += ["", "  ```text", *(f"  {t}" for t in tail), "  ```", ""]
        lines.append("")
    return lines


# ---------------------------------------------------------------- NumPy decoding for the digit grids

def load_params(entry: Entry) -> dict[str, np.ndarray] | None:
    """The trained parameters of an ok backend, or None (failed runs save none)."""
    r = entry.result
    if r.status != "ok" or not r.params_file:
        return None
    path = entry.run_dir / r.backend / r.params_file
    try:
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, KeyError, ValueError):
        return None


def model_of(entry: Entry) -> ModelConfig:
    """The model config the entry's run trained (its workload decodes the figures)."""
    return ModelConfig.from_dict(entry.record.config.get("model", {}))


def _test_digits() -> tuple[np.ndarray | None, str]:
    from harness import data
    try:
        return data.load(allow_download=False).test_x[:N_DIGITS], ""
    except HarnessError as exc:  # the report still stands without the grids; say why they are missing
        return None, str(exc)


# ---------------------------------------------------------------- figures and the markdown

def _figure_sections(entries: list[Entry], out_dir: Path) -> list[str]:
    from harness.reporting import figures

    fig_dir = out_dir / FIGURES_DIR
    lines = ["## Loss curves", ""]
    metrics = workload_of(entries[0].record.config).metrics
    curves = [figures.Curve(e.label, [x.epoch for x in ep], {m.name: [x.metrics[m.name] for x in ep] for m in metrics})
              for e in entries if (ep := finite_epochs(e.result))]
    if curves:
        bands, where = calibrated_bands(entries[0].record.config, entries[0].result.device)
        figures.loss_curves(curves, {m.name: m.name for m in metrics}, fig_dir / "loss.png", bands)
        lines += [f"![{' and '.join(m.name for m in metrics)} per epoch]({FIGURES_DIR}/loss.png)", "",
                  "Panels, left to right: " + "; ".join(f"{m.name}, {m.meaning}" for m in metrics)
                  + f"; nats per test image. Shaded: {where}", ""]
    else:
        lines += ["No backend finished an epoch.", ""]

    lines += ["## Throughput", ""]
    rows = []
    for e in entries:
        s = e.result.summary
        if not s.get("train_samples_per_second"):
            continue
        steady = measure.basis_of(s) == "steady"
        per_epoch = [x.samples_per_second for x in (e.result.epochs[1:] if steady else e.result.epochs[:1])]
        rows.append(figures.Throughput(e.label if steady else f"{e.label}, first epoch", s["train_samples_per_second"],
                                       per_epoch))
    if rows:
        figures.throughput(rows, fig_dir / "throughput.png")
        lines += [f"![training throughput per backend]({FIGURES_DIR}/throughput.png)", "",
                  "Bars: median over the steady epochs (after the first); whiskers: min-max; dots: each epoch. "
                  "A run of one epoch has no steady state: its bar is the first epoch, labelled so.", ""]
    else:
        lines += ["No backend finished an epoch.", ""]

    lines += ["## Reconstructions and samples", "",
              f"Top rows: the first {N_DIGITS} MNIST test digits; below them each backend's reconstruction "
              f"with z = mu. Samples: the decoder's pixel means for the same {SAMPLE_ROWS * SAMPLE_COLS} "
              f"draws z ~ N(0, I) (numpy default_rng({SAMPLE_SEED})) for every backend. Decoded in NumPy "
              "float64 from the saved parameters.", ""]
    digits, why = _test_digits()
    z = np.random.default_rng(SAMPLE_SEED).standard_normal(
        (SAMPLE_ROWS * SAMPLE_COLS, int(entries[0].record.config.get("model", {}).get("latent_dim", 20))))
    for e in entries:
        params = load_params(e)
        if params is None:
            lines += [f"### {e.label}", "", f"No figures: {e.result.status}, no saved parameters.", ""]
            continue
        lines += [f"### {e.label}", ""]
        if digits is not None:
            figures.reconstruction_grid(digits, model_of(e).oracle().forward(params, digits, None)["recon"],
                                        f"{e.label}: test digits (top) and reconstructions with z = mu (bottom)",
                                        fig_dir / f"recon-{e.slug}.png")
            lines.append(f"![{e.label} reconstructions]({FIGURES_DIR}/recon-{e.slug}.png)")
        else:
            lines.append(f"Reconstructions skipped: {_one_line(why)}")
        figures.sample_grid(model_of(e).oracle().decode(params, z), SAMPLE_COLS,
                            f"{e.label}: decoded z ~ N(0, I), seed {SAMPLE_SEED} (pixel means)",
                            fig_dir / f"samples-{e.slug}.png")
        lines += ["", f"![{e.label} samples]({FIGURES_DIR}/samples-{e.slug}.png)", ""]
        lines += evaluation_report.manifold_lines(e.label, e.slug, model_of(e), params, fig_dir, FIGURES_DIR)  # latent 2 only
    return lines


def _kv_block(d: dict[str, Any]) -> list[str]:
    def show(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return ["```text", *(f"{k}: {show(v)}" for k, v in d.items() if v not in (None, [], {}, "")), "```", ""]


def _environment_lines(record: RunRecord) -> dict[str, Any]:
    env, cfg = record.environment, record.config
    git = env.get("git") or {}
    gpus = "; ".join(f"{g.get('name')} ({g.get('memory')}, driver {g.get('driver')})" for g in env.get("gpus", []))
    model = cfg.get("model", {})
    out = {
        "harness": env.get("harness_version"), "python": env.get("python"), "platform": env.get("platform"),
        "cpu": f"{env.get('cpu')} ({env.get('cores')} cores; {' '.join(env.get('cpu_flags', []))})",
        "gpus": gpus or "none",
        "packages": ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v),
        "environment variables": ", ".join(f"{k}={v}" for k, v in (env.get("env") or {}).items() if v) or "none set",
        "git": f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}" if git.get("commit") else "unknown",
        "run": (f"device {cfg.get('device')}, seed {cfg.get('seed')}, {cfg.get('epochs')} epochs, "
                f"{cfg.get('threads')} threads, precision {cfg.get('precision')}, workload "
                f"{workload_of(cfg).name}, engine options {RunConfig.from_dict(cfg).engine_options or 'none'}, train/test limit {cfg.get('train_limit') or 'all'}/"
                f"{cfg.get('test_limit') or 'all'}, timeout {cfg.get('timeout')} s, target {cfg.get('target_loss')}"),
        "model": ", ".join(f"{k} {v}" for k, v in model.items()),
    }
    for r in record.results:
        if r.backend_info or r.threads:
            info = ", ".join(f"{k} {v}" for k, v in r.backend_info.items())
            out[f"backend {r.backend}"] = f"{r.threads} threads; {info}"
    return out


def _tail_sections(loaded: list[tuple[Path, RunRecord]], run_dirs: list[Path], out_dir: Path) -> list[str]:
    lines: list[str] = []
    probes = [(d, rec.probe) for d, rec in loaded if rec.probe]
    if probes:
        lines += ["## Probe", "", "Matmul peak and per-epoch floor measured on this device before the run.", ""]
        for d, probe in probes:
            lines += [f"Run `{d}`:", "", *_kv_block(probe)]
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
    lines = [f"# vae-bench report ({title})", "",
             "From: " + ", ".join(f"`{d / results.RESULTS_FILE}`" for d in run_dirs), "",
             "## Verdict", "", verdict(entries), "", *gap_table(entries)]
    lines += _summary_section(entries)
    path = out_dir / REPORT_FILE
    try:
        lines += _figure_sections(entries, out_dir)
        lines += _tail_sections(loaded, run_dirs, out_dir)
        atomic.write_text(path, "\n".join(lines))
    except OSError as exc:
        raise HarnessError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    return path


# ---------------------------------------------------------------- command line


