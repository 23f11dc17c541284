"""How much memory a seed ensemble needs, estimated before it starts, so that one that cannot fit is
one error line instead of an out-of-memory crash halfway through training.

The estimate counts what grows with the members, from the workload's own shapes (no framework):

- training state: params, gradients and Adam's two moments, float32 (4 x params x 4 bytes);
- the epoch's inputs: its permutation (int64) and its noise (float32, n x latent), per member;
- activations: every intermediate of the float64 oracle's forward pass on one sample (what backward
  keeps), float32, twice (the values and their gradients), for one training batch per member; and
  for the evaluation pass over the whole test set once, not per member (the ensemble engines
  evaluate the members in turn, or in chunks of one single-seed pass);

plus the data set once (float32 pixels). A framework adds its own overhead (compiled programs,
allocator slack, workspace), which is why only HEADROOM of the capacity is offered. The estimate is
written into the run's record next to what the device had, so the margin can be checked afterwards.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from harness.config import ModelConfig
from harness.errors import HarnessError

HEADROOM = 0.8  # the share of the device's capacity an ensemble may plan to use
GIB = float(2**30)


@functools.cache
def activation_floats_per_sample(model: ModelConfig) -> int:
    """Floats of every intermediate of the workload's forward pass on one sample (its float64 oracle)."""
    from harness.draws import init_params
    spec = model.spec()
    x = np.full((1, model.input_dim), 0.5)
    intermediates = spec.module("oracle").forward(init_params(0, model), x, np.zeros((1, model.latent_dim)))
    return int(sum(np.size(v) for v in intermediates.values() if isinstance(v, np.ndarray) and np.ndim(v) > 0))


@dataclass(frozen=True)
class Estimate:
    """Bytes an ensemble of `members` needs, by part."""

    members: int
    state: float        # params, gradients, Adam moments
    epoch_inputs: float  # permutations and noise
    activations: float  # one training batch and the evaluation pass
    data: float         # the training and test images, once

    @property
    def total(self) -> float:
        return self.state + self.epoch_inputs + self.activations + self.data

    def describe(self) -> str:
        return (f"{self.total / GIB:.2f} GiB (state {self.state / GIB:.2f}, noise and order "
                f"{self.epoch_inputs / GIB:.2f}, activations {self.activations / GIB:.2f}, data {self.data / GIB:.2f})")


def estimate(model: ModelConfig, members: int, n_train: int, n_test: int) -> Estimate:
    """What `members` seeds of `model` need together to train on n_train and evaluate on n_test images."""
    params = sum(int(np.prod(s)) for s in model.shapes().values())
    act = activation_floats_per_sample(model)
    train_activations = 4.0 * act * 2 * min(model.batch_size, n_train)
    return Estimate(members, state=members * 16.0 * params,
                    epoch_inputs=members * float(n_train) * (4 * model.latent_dim + 8),
                    activations=members * train_activations + 4.0 * act * n_test,
                    data=4.0 * model.input_dim * (n_train + n_test))


def largest_fitting(model: ModelConfig, capacity: float, n_train: int, n_test: int) -> int:
    """The most members whose estimate fits in HEADROOM of `capacity` bytes (0: not even one)."""
    one, two = (estimate(model, k, n_train, n_test).total for k in (1, 2))
    per_member, fixed = two - one, 2 * one - two
    return max(0, int((HEADROOM * capacity - fixed) // per_member))


def check_fits(model: ModelConfig, members: int, n_train: int, n_test: int, capacity: float | None,
               where: str) -> Estimate:
    """The estimate; one error line when it does not fit in HEADROOM of `capacity` (None: not known)."""
    need = estimate(model, members, n_train, n_test)
    if capacity is not None and need.total > HEADROOM * capacity:
        fit = largest_fitting(model, capacity, n_train, n_test)
        raise HarnessError(f"an ensemble of {members} seeds needs about {need.describe()}, more than "
                           f"{HEADROOM:.0%} of the {capacity / GIB:.1f} GiB {where} has; at most {fit} "
                           f"seed(s) fit: use fewer --seeds, or run them in several ensembles")
    return need


def host_available_bytes() -> float | None:
    """MemAvailable of /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        return None
    return None
