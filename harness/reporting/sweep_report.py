"""The Markdown report of a sweep: summary table, comparisons in words, loss curves, throughput, latent size.

Everything comes from DIR/sweep.json and the jobs' own results.json files; figures are PNGs drawn with
matplotlib's Agg backend next to the report. `harness report DIR` calls `write_sweep_report` when DIR
holds a sweep.json.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from harness import atomic  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.measurement import measure, results, stats
from harness.reporting.roofline_text import sweep_section as roofline_section
from harness.sweeps.state import SweepState, load  # noqa: E402
from harness.sweeps.summary import ci_triple, fmt_ci, metric_names  # noqa: E402

REPORT_FILE = "report.md"
LOSS_FIGURE = "sweep-loss-curves.png"
THROUGHPUT_FIGURE = "sweep-throughput.png"
LATENT_FIGURE = "sweep-latent.png"


def write_sweep_report(sweep_dir: Path, out_dir: Path) -> Path:
    """Write out_dir/report.md (and its figures) for the sweep in sweep_dir; return the report's path."""
    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    state = load(sweep_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    curves = epoch_table(state, sweep_dir)
    parts = [_header(state), _summary_section(state), _comparison_section(state), roofline_section(state, sweep_dir)]
    if not curves.empty:
        _plot_loss_curves(curves, metric_names(state.spec), out_dir / LOSS_FIGURE)
        meanings = "; ".join(f"`{m.name}`: {m.meaning}" for m in state.spec.base.model.spec().metrics)
        parts.append(f"## Loss curves\n\nMean over seeds per backend, band = 95% t-interval ({meanings}).\n\n"
                     f"![loss curves]({LOSS_FIGURE})\n")
        _plot_throughput(state, out_dir / THROUGHPUT_FIGURE)
        parts.append(f"## Throughput\n\nSteady training samples/s of every job (one point per seed), "
                     f"per backend and device.\n\n![throughput]({THROUGHPUT_FIGURE})\n")
    if len(state.spec.latent_dims) > 1 and state.summary:
        _plot_latent(state, out_dir / LATENT_FIGURE)
        primary = metric_names(state.spec)[0]
        parts.append(f"## `{primary}` against latent size\n\nFinal `{primary}`, mean and 95% "
                     f"interval over seeds.\n\n![latent size]({LATENT_FIGURE})\n")
    from harness.reporting.evaluation_report import sweep_section  # NLL against latent size, latent-2 manifolds
    parts.append(sweep_section(state, sweep_dir, out_dir))
    parts.append(_jobs_section(state))
    parts.append(_method_section())
    path = out_dir / REPORT_FILE
    atomic.write_text(path, "\n".join(parts))
    return path


# ---------------------------------------------------------------------------------------- data

def epoch_table(state: SweepState, sweep_dir: Path) -> pd.DataFrame:
    """One row per epoch of every finished job: backend, device, latent_dim, seed, epoch, test metrics."""
    rows = []
    for job in state.jobs:
        if job.status != "ok":
            continue
        record = results.load(sweep_dir / job.run_dir)
        for e in record.results[0].epochs:
            rows.append({"backend": job.backend, "device": job.device, "latent_dim": job.latent_dim,
                         "seed": job.seed, "epoch": e.epoch, **e.metrics})
    return pd.DataFrame(rows)


def comparison_sentences(summary: list[dict[str, Any]]) -> list[str]:
    """'jax is 1.31x (1.27-1.35) faster than torch on cpu (latent 20), with no significant loss difference'."""
    lines = []
    for s in summary:
        if s["backend"] == s["fastest"] or s["speedup_of_fastest"] is None:
            continue
        ratio = fmt_ci(*ci_triple(s, "speedup_of_fastest", "speedup"), ".2f", "x")
        sig = {True: "", False: " (not significant)", None: " (one seed: no interval)"}[s["speedup_significant"]]
        loss = _loss_clause(s)
        lines.append(f"{s['fastest']} is {ratio} faster than {s['backend']}{sig} on {s['device']} "
                     f"(latent {s['latent_dim']}, n = {s['n']}), {loss}")
    return lines


def _loss_clause(s: dict[str, Any]) -> str:
    diffs = []
    for loss in (k[: -len("_diff")] for k in s if k.endswith("_diff")):
        d, low, high = s[f"{loss}_diff"], s[f"{loss}_diff_ci_low"], s[f"{loss}_diff_ci_high"]
        if d is None or low is None:
            continue
        if s[f"{loss}_diff_significant"]:
            diffs.append(f"{loss} {d:+.3f} ({low:+.3f} to {high:+.3f}) against {s['fastest']}")
    if diffs:
        return "with a significant loss difference: " + "; ".join(diffs)
    primary = next(k[: -len("_diff")] for k in s if k.endswith("_diff"))
    if s[f"{primary}_diff_ci_low"] is None:
        return "loss difference untested (fewer than two common seeds)"
    return "with no significant loss difference"


# ---------------------------------------------------------------------------------------- text

def _header(state: SweepState) -> str:
    spec, base = state.spec, state.spec.base
    ok = sum(j.status == "ok" for j in state.jobs)
    return (f"# vae-bench sweep\n\n"
            f"- workload: {base.model.workload}; backends: {', '.join(spec.backends)}; devices: {', '.join(spec.devices)}; "
            f"seeds: {', '.join(map(str, spec.seeds))}; latent sizes: {', '.join(map(str, spec.latent_dims))}\n"
            f"- {base.epochs} epoch(s) per job; {base.train_limit or 60000} training samples; batch size "
            f"{base.model.batch_size}; precision {base.precision}; engine options {base.engine_options or 'none'}; "
            f"threads {base.threads or 'all cores'}; executor {spec.executor}\n"
            f"- jobs: {ok} of {len(state.jobs)} ok; driver wall time {state.wall_seconds:.1f} s\n"
            f"- command: `{state.command}`\n")


def _summary_section(state: SweepState) -> str:
    if not state.summary:
        return "## Summary\n\nNo job finished ok yet.\n"
    names = metric_names(state.spec)
    rows = [{"backend": s["backend"], "device": s["device"], "latent": s["latent_dim"], "n": s["n"],
             **{name: fmt_ci(s[f"{name}_mean"], s[f"{name}_ci_low"], s[f"{name}_ci_high"]) for name in names},
             f"{names[0]} sd": _fmt(s[f"{names[0]}_std"], ".3f"),
             "samples/s": fmt_ci(s["samples_per_second_mean"], s["samples_per_second_ci_low"],
                                 s["samples_per_second_ci_high"], ",.0f"),
             "samples/s sd": _fmt(s["samples_per_second_std"], ",.0f")}
            for s in state.summary]
    table = pd.DataFrame(rows).to_markdown(index=False)
    return ("## Summary\n\nMean (95% t-interval) over seeds of the final epoch's losses and the "
            f"{throughput_basis(state)} training throughput; sd = sample standard deviation.\n\n{table}\n")


def throughput_basis(state: SweepState) -> str:
    """Which throughput the sweep's samples/s are: 'steady', 'first-epoch' (1-epoch jobs) or both, labelled."""
    # Jobs recorded before the field existed: their basis follows from the spec's epoch count.
    bases = {j.throughput_basis or measure.throughput_basis(state.spec.base.epochs)
             for j in state.jobs if j.status == "ok" and j.samples_per_second}
    if bases == {"first epoch"}:
        return "first-epoch (1-epoch jobs have no steady state)"
    return "steady" if bases <= {"steady"} else "steady or first-epoch (mixed job lengths)"


def _comparison_section(state: SweepState) -> str:
    lines = comparison_sentences(state.summary)
    if not lines:
        return "## Comparisons\n\nOnly one backend per device and latent size finished; nothing to compare.\n"
    return "## Comparisons\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"


def _jobs_section(state: SweepState) -> str:
    rows = [{"job": j.id, "status": j.status, "node": j.node or "-", "wall s": _fmt(j.wall_seconds, ".1f"),
             "overhead s": _fmt(j.overhead_seconds, ".1f"), "error": (j.error or "")[:120]}
            for j in state.jobs]
    return ("## Jobs\n\nOverhead = the job's wall time seen by the driver minus the setup, compile, training "
            "and evaluation time the job measured itself.\n\n"
            + pd.DataFrame(rows).to_markdown(index=False) + "\n")


def _method_section() -> str:
    return ("## Method\n\n" + stats.__doc__.split("\n", 2)[2].strip() + "\n")


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


# ---------------------------------------------------------------------------------------- figures

def _panels(n: int, width: float = 5.0, height: float = 3.6):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _plot_loss_curves(curves: pd.DataFrame, metrics: tuple[str, ...], path: Path) -> None:
    """Per device x latent size: each test metric per backend (primary solid, the others dashed), with bands."""
    keys = sorted(curves.groupby(["device", "latent_dim"]).groups)
    fig, axes = _panels(len(keys))
    for ax, (device, latent) in zip(axes, keys):
        panel = curves[(curves["device"] == device) & (curves["latent_dim"] == latent)]
        for i, (backend, rows) in enumerate(panel.groupby("backend")):
            color = f"C{i}"
            for loss, style in zip(metrics, ("-", "--", ":", "-.")):
                band = pd.DataFrame([{"epoch": epoch, **stats.describe(g[loss])}
                                     for epoch, g in rows.groupby("epoch")])
                label = f"{backend} {loss}"
                ax.plot(band["epoch"], band["mean"], style, color=color, marker="o", markersize=3, label=label)
                if band["ci_low"].notna().any():
                    ax.fill_between(band["epoch"], band["ci_low"].astype(float), band["ci_high"].astype(float),
                                    color=color, alpha=0.2, linewidth=0)
        ax.set(title=f"{device}, latent {latent}", xlabel="epoch", ylabel="per-sample test loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    _save(fig, path)


def _plot_throughput(state: SweepState, path: Path) -> None:
    """Box plot with every job's point, one box per backend x device (x latent size when several)."""
    jobs = pd.DataFrame([vars(j) for j in state.jobs if j.status == "ok" and j.samples_per_second])
    several = len(state.spec.latent_dims) > 1
    jobs["label"] = jobs["backend"] + "\n" + jobs["device"]
    if several:
        jobs["label"] += "\nz" + jobs["latent_dim"].astype(str)
    labels = sorted(jobs["label"].unique())
    fig, axes = _panels(1, width=max(5.0, 1.4 * len(labels)))
    ax = axes[0]
    values = [jobs.loc[jobs["label"] == lab, "samples_per_second"].to_numpy() for lab in labels]
    ax.boxplot(values, tick_labels=labels, showfliers=False)
    for i, v in enumerate(values, start=1):
        ax.plot([i] * len(v), v, "o", color="C0", alpha=0.7, markersize=4)
    ax.set(ylabel=f"{throughput_basis(state).split(' (')[0]} training samples/s", title="throughput per job")
    _save(fig, path)


def _plot_latent(state: SweepState, path: Path) -> None:
    """The final primary metric against latent size, one line per backend, one panel per device."""
    primary = metric_names(state.spec)[0]
    summary = pd.DataFrame(state.summary)
    devices = sorted(summary["device"].unique())
    fig, axes = _panels(len(devices))
    for ax, device in zip(axes, devices):
        for backend, rows in summary[summary["device"] == device].groupby("backend"):
            rows = rows.sort_values("latent_dim")
            mean = rows[f"{primary}_mean"].astype(float)
            low = (mean - rows[f"{primary}_ci_low"].astype(float)).fillna(0)
            high = (rows[f"{primary}_ci_high"].astype(float) - mean).fillna(0)
            ax.errorbar(rows["latent_dim"], mean, yerr=[low, high], marker="o", capsize=3, label=backend)
        ax.set(title=device, xlabel="latent size", ylabel=f"final {primary}", xscale="log")
        latents = sorted(summary["latent_dim"].unique())
        ax.set_xticks(latents, labels=[str(z) for z in latents])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())
