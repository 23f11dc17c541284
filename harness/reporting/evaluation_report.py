"""Report pieces for `harness evaluate`'s estimates: the IWAE column, the manifold figures, loss vs latent size.

harness/reporting/report.py and harness/reporting/sweep_report.py call into here, so the evaluation adds to their reports
without growing them: a run's summary table gets an "NLL (IWAE, K=...)" column beside the test metrics
when results.json holds one; a latent-2 run gets the two manifold figures
(harness/reporting/manifold.py); a sweep gets its test metrics and the NLL against latent size,
each with its 95 % t-interval over seeds, and the manifold figures of its latent-2 jobs.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from harness import atomic  # manifold (matplotlib, SciPy) and stats (pandas) load when drawn
from harness.config import TEST_SIZE, ModelConfig
from harness.errors import HarnessError
from harness.measurement import results

LOSS_FIGURE = "sweep-latent-losses.png"


def iwae_of(result: results.BackendResult) -> dict[str, Any] | None:
    """The result's whole-test-set IWAE record, else its test-subset one, else None (never evaluated)."""
    found = result.evaluation or {}
    return found.get("iwae") or found.get("iwae_subset")


def iwae_column(group: list[results.BackendResult]) -> tuple[str, list[str]] | None:
    """(header, cells) of the summary table's NLL column, or None when no result of `group` has one.

    The header names K when every evaluated result shares it; otherwise each cell carries its own.
    A cell notes a test subset, since its NLL is then not comparable with full-test-set losses.
    """
    found = [iwae_of(r) for r in group]
    ks = {e["k"] for e in found if e}
    if not ks:
        return None
    header = f"NLL (IWAE, K={ks.pop()})" if len(ks) == 1 else "NLL (IWAE)"
    cells = []
    for e in found:
        if not e:
            cells.append("-")
            continue
        cell = f"{e['nll']:.2f} ± {e['stderr']:.2f}"
        if header == "NLL (IWAE)":
            cell += f" (K={e['k']})"
        if e["test_samples"] < TEST_SIZE:
            cell += f" ({e['test_samples']} test images)"
        cells.append(cell)
    return header, cells


NOTE = ("NLL (IWAE, K): minus the importance-weighted bound log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) "
        "(Burda et al. 2015) with K draws z_k ~ q(z|x), averaged over test images, ± its standard error over "
        "test images; `python -m harness evaluate`, the same harness-drawn noise for every backend, computed "
        "in the backend's own framework. It bounds -log p(x) from above and tightens as K grows; K = 1 is the "
        "single-sample negative ELBO that test_loss_sampled estimates. Same non-binarised pixels as the losses, "
        "so not comparable with binarised-MNIST log-likelihoods.")


def summary_notes(group: list[results.BackendResult]) -> list[str]:
    """The NLL column's explanation and what each estimate cost, as report lines ([] if none was made)."""
    found = [(r.backend, e) for r in group if (e := iwae_of(r))]
    if not found:
        return []
    cost = "; ".join(f"{b} {e['seconds']:.1f} s (K={e['k']}, {e['test_samples']} images, {e['device']}, "
                     f"{e['threads']} thread(s))" for b, e in found)
    return [NOTE, "", f"Cost of each estimate (seconds of the evaluation loop, noise included, process start "
                      f"and compile excluded): {cost}.", ""]


def manifold_lines(label: str, slug: str, model: ModelConfig, params: dict[str, np.ndarray], fig_dir: Path,
                   rel: str) -> list[str]:
    """Markdown (and the two PNGs in fig_dir) of a latent-2 run's manifold; [] for other latent sizes."""
    from harness import data
    from harness.reporting import manifold
    if model.latent_dim != 2:
        return []
    try:
        mnist = data.load(allow_download=False)
    except HarnessError as exc:
        return [f"Latent manifold skipped: {exc}", ""]
    names = (f"manifold-{slug}.png", f"posterior-{slug}.png")
    manifold.draw(model, params, mnist.test_x, mnist.test_y, label, fig_dir / names[0], fig_dir / names[1])
    return [f"![{label} 2-D latent manifold]({rel}/{names[0]})", "",
            f"![{label} posterior means by digit]({rel}/{names[1]})", "",
            "Latent size 2: the decoder's pixel means over a grid of z spaced by Gaussian quantiles (Kingma & "
            "Welling, Figure 4), and every test image's posterior mean coloured by its label; float64 NumPy "
            "from the saved params.", ""]


# ---------------------------------------------------------------------------------------- sweeps

def sweep_rows(state, sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per ok job: latent size, seed, final losses and its IWAE record (None if not evaluated)."""
    rows = []
    for job in state.jobs:
        if job.status != "ok":
            continue
        result = results.load(sweep_dir / job.run_dir).results[0]
        rows.append({"backend": job.backend, "device": job.device, "latent_dim": job.latent_dim, "seed": job.seed,
                     "run_dir": job.run_dir, "params_file": result.params_file, "metrics": job.metrics or {},
                     "iwae": iwae_of(result)})
    return rows


def latent_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend, device and latent size: mean and 95 % interval over seeds of each loss and of the NLL."""
    from harness.measurement import stats
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["backend"], r["device"], r["latent_dim"]), []).append(r)
    out = []
    for (backend, device, latent), group in sorted(groups.items()):
        nll = [r["iwae"]["nll"] for r in group if r["iwae"]]
        names = list(dict.fromkeys(k for r in group for k in r["metrics"]))
        out.append({"backend": backend, "device": device, "latent_dim": latent, "n": len(group),
                    "metrics": {k: stats.describe(r["metrics"].get(k) for r in group) for k in names},
                    "nll": stats.describe(nll), "k": sorted({r["iwae"]["k"] for r in group if r["iwae"]}),
                    "test_images": sorted({r["iwae"]["test_samples"] for r in group if r["iwae"]})})
    return out


def _cell(d: dict[str, Any]) -> str:
    if d["mean"] is None:
        return "-"
    if d["ci_low"] is None:
        return f"{d['mean']:.2f}"
    return f"{d['mean']:.2f} ({d['ci_low']:.2f}–{d['ci_high']:.2f})"


def plot_losses(table: list[dict[str, Any]], k_label: str, path: Path) -> None:
    """The test metrics and the IWAE NLL against latent size, mean with 95 % interval bars."""
    from harness.reporting import manifold  # noqa: F401, I001  (selects matplotlib's Agg backend before pyplot loads)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    names = list(dict.fromkeys(k for t in table for k in t["metrics"]))
    series = [(name, lambda t, k=name: t["metrics"].get(k)) for name in names]
    series.append((f"NLL (IWAE, {k_label})", lambda t: t["nll"]))
    for name, value in series:
        pts = [(t["latent_dim"], value(t)) for t in table if value(t) and value(t)["mean"] is not None]
        if not pts:
            continue
        x = np.array([p[0] for p in pts], float)
        mean = np.array([p[1]["mean"] for p in pts])
        low = np.array([p[1]["mean"] - (p[1]["ci_low"] if p[1]["ci_low"] is not None else p[1]["mean"]) for p in pts])
        high = np.array([(p[1]["ci_high"] if p[1]["ci_high"] is not None else p[1]["mean"]) - p[1]["mean"] for p in pts])
        ax.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, label=name)
    latents = sorted({t["latent_dim"] for t in table})
    ax.set_xscale("log")
    ax.set_xticks(latents, labels=[str(z) for z in latents])
    ax.minorticks_off()
    ax.set(xlabel="latent size", ylabel="nats per test image", title="Final test losses against latent size (mean, 95% interval over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def sweep_section(state, sweep_dir: Path, out_dir: Path) -> str:
    """Markdown of the sweep's losses and NLL against latent size, and its latent-2 jobs' manifolds."""
    rows = sweep_rows(state, sweep_dir)
    if not rows or (not any(r["iwae"] for r in rows) and all(r["latent_dim"] != 2 for r in rows)):
        return ""
    parts = []
    table = latent_table(rows)
    ks = sorted({k for t in table for k in t["k"]})
    images = sorted({n for t in table for n in t["test_images"]})
    k_label = "K=" + "/".join(map(str, ks)) if ks else "not evaluated"
    if ks:
        import pandas as pd
        frame = pd.DataFrame([{"backend": t["backend"], "device": t["device"], "latent": t["latent_dim"],
                               "n": t["n"], **{k: _cell(d) for k, d in t["metrics"].items()},
                               f"NLL (IWAE, {k_label})": _cell(t["nll"])} for t in table])
        plot_losses(table, k_label, out_dir / LOSS_FIGURE)
        parts.append(f"## Loss and IWAE NLL against latent size\n\nFinal test losses and the importance-weighted "
                     f"NLL ({k_label}, {'/'.join(map(str, images))} test images; `harness evaluate`), mean "
                     f"(95% t-interval) over seeds, nats per test image.\n\n{frame.to_markdown(index=False)}\n\n"
                     f"![losses against latent size]({LOSS_FIGURE})\n\n{NOTE}\n")
    lines = []
    for r in rows:
        if r["latent_dim"] != 2 or not r["params_file"]:
            continue
        path = sweep_dir / r["run_dir"] / r["backend"] / r["params_file"]
        with np.load(path) as npz:
            params = {k: npz[k] for k in npz.files}
        label = f"{r['backend']} {r['device']} latent 2 seed {r['seed']}"
        model = results.load(sweep_dir / r["run_dir"]).config.model
        lines += [f"### {label}", "", *manifold_lines(label, r["run_dir"], model, params, out_dir, ".")]
    if lines:
        parts.append("## The 2-D latent manifold\n\n" + "\n".join(lines))
    return "\n".join(parts)
