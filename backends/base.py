"""The `VAEBackend` protocol: what the harness asks of every framework implementation.

A backend receives everything that decides the numbers from the harness (initial NumPy params, the
training-set permutation of each epoch and the noise of each epoch), so that differences between
backends can only come from the framework. The noise arrives as a `Noise`: the array itself (the
default, identical in every backend) or, in the opt-in `--noise framework` mode, a seed for the
framework's own generator. State leaves a backend
as NumPy arrays in one framework-neutral layout (`state_dict` names, Adam moments under `adam.m.*` /
`adam.v.*`, the step count under `adam.step`), so a checkpoint written by one backend loads into any.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from harness.config import RunConfig
from harness.draws import epoch_noise, noise_seed

# The workload's test metrics, per test image, by name (workloads.spec.Workload.metrics).
Metrics = dict[str, float]


def per_sample(names: tuple[str, ...], sums, n: int) -> Metrics:
    """Metric sums over n test images (in the workload's metric order) as per-image values by name."""
    if len(names) != len(sums):
        raise ValueError(f"{len(sums)} metric sums for the {len(names)} metrics {names}")
    return {name: float(total) / n for name, total in zip(names, sums)}


@dataclass(frozen=True)
class Noise:
    """The reparameterisation noise of one pass over a dataset.

    `eps` is the noise itself, (n, latent) float32, row i for the sample at position i of the pass; it
    is None in `--noise framework` mode, where the backend draws its own from `seed`, and in `--noise
    counter` mode, where the backend generates the harness's counter-based noise (harness/counter_noise.py)
    of (run seed, epoch) = `counter` on its device, stream STREAM_REPARAM, row i = position i.
    """

    seed: int
    eps: np.ndarray | None = None
    counter: tuple[int, int] | None = None  # (run seed, epoch) of the counter-based noise


def pass_noise(source: str, seed: int, epoch: int, n: int, latent: int) -> Noise:
    """The noise of one pass over n samples (epoch 0 = evaluation) from `source` (RunConfig.noise)."""
    if source == "counter":
        return Noise(noise_seed(seed, epoch), counter=(seed, epoch))
    return Noise(noise_seed(seed, epoch), epoch_noise(seed, epoch, n, latent) if source == "harness" else None)


@runtime_checkable
class VAEBackend(Protocol):
    """One framework's way of training any workload (an engine): setup, epochs, evaluation, state."""

    name: str

    def setup(self, params: dict[str, np.ndarray], train_x: np.ndarray, test_x: np.ndarray,
              config: RunConfig) -> None:
        """Load the initial params and the data onto `config.device`; build the optimiser."""

    def warmup(self) -> None:
        """Compile / trace every shape the run will use, without changing the training state.

        The harness times this call as `compile_seconds`; eager backends may do nothing.
        """

    def train_epoch(self, perm: np.ndarray, noise: Noise) -> float:
        """Train one epoch over `train_x[perm]` in batches, sample perm[i] with noise row i; return the
        mean per-sample train loss.

        Returning a Python float synchronises the device, which ends the timed window.
        """

    def evaluate(self, noise: Noise) -> Metrics:
        """The workload's test metrics per test image over the whole test set (no gradients), by name
        (for the VAEs: loss with z = mu, then with one sampled z); test sample i gets noise row i."""

    def lockstep_step(self, x: np.ndarray, eps: np.ndarray) -> float:
        """One optimiser step on batch `x` with the reparameterisation noise `eps` given; returns the batch-sum loss."""

    def get_state(self) -> dict[str, np.ndarray]:
        """Params and Adam state as NumPy arrays (see module docstring for the layout)."""

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `get_state` returned (from this or any other backend)."""

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Bernoulli means (sigmoid outputs) for latent codes z, shape (n, 784)."""

    def synchronize(self) -> None:
        """Wait for all queued device work (a no-op where execution is synchronous)."""

    def device_memory(self) -> dict[str, float]:
        """Device memory figures in bytes ({} on CPU): e.g. peak_bytes, in_use_bytes."""


@runtime_checkable
class EnsembleBackend(Protocol):
    """One framework's way of training N seeds of one workload as ONE batched program (`--ensemble`).

    Member i is seed i of the ensemble and must see exactly what its own single-seed run sees: its own
    initial params, permutation and noise. Adam is elementwise, so one Adam over the stacked params is
    N independent Adams when the members' losses are summed. Every array argument and result has the
    member axis first; a member whose loss is not finite must not disturb the others.
    """

    name: str

    def setup(self, params: list[dict[str, np.ndarray]], train_x: np.ndarray, test_x: np.ndarray,
              config: RunConfig) -> None:
        """Load one params dict per member (neutral layout) and the data onto `config.device`."""

    def warmup(self) -> None:
        """Compile every shape the run will use, without changing the training state."""

    def train_epoch(self, perms: np.ndarray, noises: list[Noise]) -> np.ndarray:
        """One epoch of every member: member i walks train_x[perms[i]] (perms: (N, n)) with noises[i];
        returns the N mean per-sample train losses (float64, host; returning synchronises)."""

    def evaluate(self, noises: list[Noise]) -> list[Metrics]:
        """Each member's test metrics per test image (as VAEBackend.evaluate), member i with noises[i]."""

    def lockstep_step(self, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """One optimiser step of every member on its own batch: x (N, B, D), eps (N, B, latent);
        returns the N batch-sum losses."""

    def get_state(self) -> list[dict[str, np.ndarray]]:
        """Each member's params and Adam state in the neutral layout (as VAEBackend.get_state)."""

    def set_state(self, states: list[dict[str, np.ndarray]]) -> None:
        """Restore what `get_state` returned (one dict per member, from any backend)."""

    def synchronize(self) -> None:
        """Wait for all queued device work."""

    def device_memory(self) -> dict[str, float]:
        """As VAEBackend.device_memory; plus `capacity_bytes` (what the device can hold) where known."""

    def describe(self) -> dict[str, str]:
        """How the ensemble executes (arrangement, step, optimizer), for the record."""


def adam_state_keys(param_names: list[str]) -> list[str]:
    """Names of the Adam entries in a framework-neutral state dict."""
    return ["adam.step"] + [f"adam.m.{n}" for n in param_names] + [f"adam.v.{n}" for n in param_names]


