"""The learned 2-D latent space of a latent-size-2 run, drawn from its saved params in NumPy.

Two figures, as in Kingma & Welling (2014), Figure 4 and its usual companion:
- the manifold: the decoder's pixel means over an n x n grid of z whose coordinates are evenly spaced
  probabilities (i + 0.5) / n sent through the inverse Gaussian CDF, so the grid covers the prior
  N(0, I) by equal mass rather than equal distance;
- the test set's posterior means mu(x), one dot per test image, coloured by its digit label (from
  the verified MNIST label file).
Nothing here imports torch or jax; the decoder is the workload oracle's float64 NumPy one.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: reports are built on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402

from harness import atomic  # noqa: E402
from harness.config import ModelConfig  # noqa: E402

GRID = 20  # images per side of the manifold: 400 digits, as in the paper's figure
DPI = 120


def grid_z(n: int = GRID) -> np.ndarray:
    """(n*n, 2) latent codes, row-major: z2 falls from the top row down, z1 rises left to right.

    The probabilities (i + 0.5) / n stay inside (0, 1), where the inverse CDF is finite.
    """
    q = norm.ppf((np.arange(n) + 0.5) / n)
    z1, z2 = np.meshgrid(q, q[::-1])
    return np.stack([z1.ravel(), z2.ravel()], axis=1)


def posterior_means(oracle, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """mu(x) of the encoder by the workload's float64 oracle, shape (N, latent)."""
    return oracle.forward(params, x, None)["mu"]


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def plot_manifold(images: np.ndarray, n: int, title: str, path: Path) -> None:
    """n x n decoded digits (pixel means in [0, 1]) as one seamless canvas, with the z quantiles on the axes."""
    canvas = images.reshape(n, n, 28, 28).transpose(0, 2, 1, 3).reshape(n * 28, n * 28)
    fig, ax = plt.subplots(figsize=(7.5, 7.5))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    q = norm.ppf((np.arange(n) + 0.5) / n)
    ticks = [0, n // 4, n // 2, 3 * n // 4, n - 1]
    ax.set_xticks([28 * i + 13.5 for i in ticks], [f"{q[i]:.2f}" for i in ticks])
    ax.set_yticks([28 * i + 13.5 for i in ticks], [f"{q[::-1][i]:.2f}" for i in ticks])
    ax.set_xlabel("z1 (inverse Gaussian CDF of evenly spaced probabilities)")
    ax.set_ylabel("z2")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_posterior(mu: np.ndarray, labels: np.ndarray, title: str, path: Path) -> None:
    """One dot per test image at its posterior mean, coloured by digit label."""
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    for digit in range(10):
        pick = labels == digit
        ax.scatter(mu[pick, 0], mu[pick, 1], s=2, alpha=0.6, color=plt.cm.tab10(digit), label=str(digit))
    ax.set_xlabel("mu1")
    ax.set_ylabel("mu2")
    ax.set_title(title, fontsize=10)
    ax.legend(title="digit", markerscale=5, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def draw(model: ModelConfig, params: dict[str, np.ndarray], test_x: np.ndarray, test_y: np.ndarray, label: str,
         manifold_path: Path, posterior_path: Path) -> bool:
    """Both figures for a latent-2 run; False (and nothing written) for any other latent size."""
    if model.latent_dim != 2:
        return False
    oracle = model.oracle()  # the workload's float64 NumPy decoder and encoder
    plot_manifold(oracle.decode(params, grid_z(GRID)), GRID,
                  f"{label}: decoder pixel means over a {GRID} x {GRID} grid of z (Gaussian quantiles)",
                  manifold_path)
    plot_posterior(posterior_means(oracle, params, test_x), test_y,
                   f"{label}: posterior means of the {len(test_x)} test images by digit label", posterior_path)
    return True
