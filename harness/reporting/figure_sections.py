"""The figure sections of report.md: loss curves, throughput, and each backend's reconstructions and samples.

The digit grids are decoded by the workload's float64 NumPy oracle from the saved `<backend>/params.npz`,
never by the backend that trained them, so they can be redrawn on any machine with MNIST, without torch
or jax. The drawing itself is harness/reporting/figures.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.config import ModelConfig
from harness.draws import SAMPLE_SEED, sample_latents
from harness.errors import HarnessError
from harness.measurement import measure
from harness.measurement.results import finite_epochs
from harness.reporting import evaluation_report
from harness.reporting.entries import Entry, one_line
from harness.reporting.verdict_text import calibrated_bands

FIGURES_DIR = "figures"

N_DIGITS = 8          # the first N test digits, the same for every backend so grids compare side by side
SAMPLE_ROWS, SAMPLE_COLS = 4, 8


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
    return entry.record.config.model


def _test_digits() -> tuple[np.ndarray | None, str]:
    from harness import data
    try:
        return data.load(allow_download=False).test_x[:N_DIGITS], ""
    except HarnessError as exc:  # the report still stands without the grids; say why they are missing
        return None, str(exc)


def first_seed_of_each(entries: list[Entry]) -> list[Entry]:
    """The first entry of each (run, backend, device): every entry when each has one seed."""
    seen: dict[tuple, Entry] = {}
    for e in entries:
        seen.setdefault((e.run_dir, e.result.backend, e.result.device), e)
    return list(seen.values())


# ---------------------------------------------------------------- the sections

def figure_sections(entries: list[Entry], out_dir: Path) -> list[str]:
    from harness.reporting import figures

    fig_dir = out_dir / FIGURES_DIR
    lines = ["## Loss curves", ""]
    metrics = entries[0].record.config.model.spec().metrics
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
        timed = e.result.epochs[1:] if steady else e.result.epochs[:1]
        n_train = timed[0].samples_per_second * timed[0].train_seconds
        # the same epochs as the summary's median: these and the --repeats epochs
        per_epoch = [x.samples_per_second for x in timed] + [n_train / r for r in e.result.repeat_seconds or ()]
        rows.append(figures.Throughput(e.label if steady else f"{e.label}, first epoch", s["train_samples_per_second"],
                                       per_epoch))
    if rows:
        figures.throughput(rows, fig_dir / "throughput.png")
        lines += [f"![training throughput per backend]({FIGURES_DIR}/throughput.png)", "",
                  "Bars: median over the steady epochs (after the first, and any --repeats epochs); whiskers: "
                  "min-max; dots: each epoch. "
                  "A run of one epoch has no steady state: its bar is the first epoch, labelled so.", ""]
    else:
        lines += ["No backend finished an epoch.", ""]

    lines += ["## Reconstructions and samples", "",
              f"Top rows: the first {N_DIGITS} MNIST test digits; below them each backend's reconstruction "
              f"with z = mu. Samples: the decoder's pixel means for the same {SAMPLE_ROWS * SAMPLE_COLS} "
              f"draws z ~ N(0, I) (numpy default_rng({SAMPLE_SEED})) for every backend. Decoded in NumPy "
              "float64 from the saved parameters.", ""]
    digits, why = _test_digits()
    z = sample_latents(SAMPLE_ROWS * SAMPLE_COLS, entries[0].record.config.model.latent_dim)
    shown = first_seed_of_each(entries)
    if len(shown) < len(entries):  # a run of many seeds: one pair of grids per backend, not one per seed
        lines += [f"With {len(entries)} results of several seeds, the grids show each backend's first seed.", ""]
    for e in shown:
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
            lines.append(f"Reconstructions skipped: {one_line(why)}")
        figures.sample_grid(model_of(e).oracle().decode(params, z), SAMPLE_COLS,
                            f"{e.label}: decoded z ~ N(0, I), seed {SAMPLE_SEED} (pixel means)",
                            fig_dir / f"samples-{e.slug}.png")
        lines += ["", f"![{e.label} samples]({FIGURES_DIR}/samples-{e.slug}.png)", ""]
        lines += evaluation_report.manifold_lines(e.label, e.slug, model_of(e), params, fig_dir, FIGURES_DIR)  # latent 2 only
    return lines
