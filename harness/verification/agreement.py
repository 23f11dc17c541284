"""When two results may be compared, and how far apart backends are on the same seed, epoch by epoch.

Two results are one experiment when everything that decides their losses, other than the framework, is
the same: the device kind, the model config (batch size included), the precision, the data limits and
the noise source. Only then is a loss gap between them a statement about the frameworks; the verdict,
`check`, `compare` and `calibrate` all ask `experiment` and nothing else.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.config import ModelConfig, RunConfig

# The fields of an experiment, in the order a mismatch is reported.
EXPERIMENT_FIELDS = ("device_kind", "model", "precision", "train_limit", "test_limit", "noise")


def device_kind(device: str) -> str:
    """'cuda:1' -> 'cuda'; tolerances hold for a kind of device, not for one card's index."""
    return device.split(":", 1)[0]


def experiment(config: RunConfig, device: str | None = None) -> dict[str, Any]:
    """The comparability key of a run's config (a record's parsed `config`), for `device` if given.

    Records written before the noise field existed used each framework's own noise (RunConfig.from_dict).
    """
    return {
        "device_kind": device_kind(device or config.device),
        "model": model_key(config.model.to_dict()),
        "precision": config.precision,
        "train_limit": int(config.train_limit or 0),
        "test_limit": int(config.test_limit or 0),
        "noise": config.noise,
    }


def model_key(model: dict[str, Any]) -> dict[str, Any]:
    """A model config as compared: read as a ModelConfig (records and targets written before workloads
    existed trained the MLP VAE; a workload's config holds only its own sizes, so the MLP's hidden_dim
    that old conv-vae records and targets carry is not compared), then sorted."""
    return dict(sorted(ModelConfig.from_dict(model).to_dict().items()))


def mismatch(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """None when two experiments are the same; else a short phrase naming the first field that differs."""
    a, b = {**a, "model": model_key(a.get("model") or {})}, {**b, "model": model_key(b.get("model") or {})}
    for name in EXPERIMENT_FIELDS:
        if a.get(name) != b.get(name):
            if name == "model":
                keys = sorted(k for k in set(a["model"]) | set(b["model"]) if a["model"].get(k) != b["model"].get(k))
                return "model config differs (" + ", ".join(
                    f"{k} {a['model'].get(k)} vs {b['model'].get(k)}" for k in keys) + ")"
            return f"{name.replace('_', ' ')} differs ({a.get(name)} vs {b.get(name)})"
    return None


@dataclass(frozen=True)
class Gap:
    """The largest difference in the primary test metric between any two backends at one epoch on one seed.

    It holds no metric name: the caller chose the numbers (the verdict takes each record's primary metric)
    and names them in its text."""

    epoch: int
    value: float
    high: str  # the backend with the higher value
    low: str


def epoch_gaps(losses: dict[str, dict[int, float]]) -> dict[int, Gap]:
    """Per epoch, the largest same-seed gap among the backends that finished it with a finite loss.

    `losses` maps backend label -> {epoch: primary metric}, every entry from one seed and one experiment.
    """
    gaps: dict[int, Gap] = {}
    epochs = sorted({e for per in losses.values() for e in per})
    for epoch in epochs:
        at = {b: per[epoch] for b, per in losses.items() if epoch in per and math.isfinite(per[epoch])}
        if len(at) < 2:
            continue
        hi, lo = max(at, key=at.get), min(at, key=at.get)
        gaps[epoch] = Gap(epoch, at[hi] - at[lo], hi, lo)
    return gaps


