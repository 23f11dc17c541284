"""The report's PNG figures (matplotlib, Agg): loss curves, throughput, digit grids.

Every function takes plain data (no results objects) and writes one 150-dpi PNG atomically, so a
half-written image never sits beside a finished report. Titles name the backend, the z that was used
and the units, because figures get copied out of the report on their own.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are built on headless machines and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness import atomic  # noqa: E402

DPI = 150



@dataclass(frozen=True)
class BandMark:
    """A calibrated band of one metric at one epoch (from harness/verification/targets.toml), drawn behind the curves."""

    metric: str
    epoch: int
    low: float
    high: float


@dataclass(frozen=True)
class Curve:
    """One backend's per-epoch test metrics (name -> one value per epoch), labelled as in the report."""

    label: str
    epochs: list[int]
    metrics: dict[str, list[float]]


@dataclass(frozen=True)
class Throughput:
    """One backend's training throughput over its steady epochs (train samples per second)."""

    label: str
    median: float
    per_epoch: list[float]


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def loss_curves(curves: list[Curve], titles: dict[str, str], path: Path, bands: list[BandMark] = ()) -> None:
    """Each test metric per epoch (`titles`: name -> panel title), one panel each, calibrated bands behind."""
    fig, axes = plt.subplots(1, len(titles), figsize=(6 * len(titles), 4.5), sharey=True, squeeze=False)
    axes = list(axes[0])
    panels = [(ax, title, name) for ax, (name, title) in zip(axes, titles.items())]
    styles = ({"color": "tab:green", "alpha": 0.15}, {"color": "tab:olive", "alpha": 0.15})
    for ax, title, field in panels:
        # Horizontal spans, not points at x = epoch: a short run keeps a readable x axis.
        for band, style in zip(sorted((b for b in bands if b.metric == field), key=lambda b: b.epoch), styles):
            ax.axhspan(band.low, band.high, **style,
                       label=f"calibrated band, epoch {band.epoch}: {band.low:g}-{band.high:g}")
        for c in curves:
            ax.plot(c.epochs, c.metrics[field], marker="o", markersize=3, label=c.label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if max((len(c.epochs) for c in curves), default=0) <= 20:
            ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("loss per test sample (nats)")
    fig.suptitle("Test loss per epoch" + (" (bands: harness/verification/targets.toml)" if bands else " (no calibrated bands)"))
    fig.tight_layout()
    _save(fig, path)


def throughput(rows: list[Throughput], path: Path) -> None:
    """Median training throughput per backend as bars, every steady epoch as a dot, min-max as whiskers."""
    # Constrained layout keeps the legend, placed outside the bars, inside the image.
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.8), layout="constrained")
    y = np.arange(len(rows))
    medians = np.array([r.median for r in rows])
    lo = medians - np.array([min(r.per_epoch) for r in rows])
    hi = np.array([max(r.per_epoch) for r in rows]) - medians
    ax.barh(y, medians, height=0.6, color="tab:blue", alpha=0.6, xerr=[lo, hi], capsize=4,
            label="median (min-max)")
    for i, r in enumerate(rows):
        ax.scatter(r.per_epoch, [i] * len(r.per_epoch), color="black", s=10, zorder=3,
                   label="one steady epoch" if i == 0 else None)
        ax.annotate(f"{r.median:,.0f}", (r.median, i), xytext=(4, 6), textcoords="offset points", fontsize=8)
    ax.set_yticks(y, [r.label for r in rows])
    ax.invert_yaxis()  # first row on top, like the table
    if medians.min() > 0 and medians.max() / medians.min() > 30:  # CPU next to GPU: bars would vanish
        ax.set_xscale("log")
    ax.set_xlabel("training samples per second (steady epochs, after the first)")
    ax.set_title("Training throughput")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def _tile(images: np.ndarray, cols: int) -> np.ndarray:
    """(N, 784) in [0, 1] -> one (rows*28, cols*28) image, row-major, with a 1-pixel gap."""
    n = len(images)
    rows = -(-n // cols)
    canvas = np.full((rows * 29 - 1, cols * 29 - 1), 0.4)  # grey gaps: visible, not heavier than ink
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * 29:r * 29 + 28, c * 29:c * 29 + 28] = img.reshape(28, 28)
    return canvas


def reconstruction_grid(digits: np.ndarray, recon: np.ndarray, title: str, path: Path) -> None:
    """Test digits (top row) above their reconstructions (bottom row)."""
    fig, axes = plt.subplots(2, 1, figsize=(0.9 * len(digits) + 1.2, 2.8))
    for ax, imgs, name in ((axes[0], digits, "test digit"), (axes[1], recon, "reconstruction\n(z = mu)")):
        ax.imshow(_tile(imgs, len(imgs)), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def sample_grid(samples: np.ndarray, cols: int, title: str, path: Path) -> None:
    """Decoder outputs (Bernoulli means, pixel values in [0, 1]) for latent draws, row-major."""
    rows = -(-len(samples) // cols)
    fig, ax = plt.subplots(figsize=(0.9 * cols + 0.4, 0.9 * rows + 0.8))
    ax.imshow(_tile(samples, cols), cmap="gray_r", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
