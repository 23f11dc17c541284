"""Backends that save every noise array the harness hands them (to $VAE_BENCH_SPY_DIR), then train as usual.

Registered as spy-<name> by tests/plugin_backends.py; used to prove that every backend receives the
same noise, by comparing the arrays themselves rather than the losses they lead to.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from backends.base import Noise
from backends.jax.engine import JaxBackend
from backends.torch.eager import TorchEagerBackend
from backends.torch.reference import TorchReferenceBackend


def spy(cls: type) -> type:
    class Spy(cls):
        name = f"spy-{cls.name}"
        saved = 0

        def train_epoch(self, perm, noise: Noise):
            self._save("train", noise)
            return super().train_epoch(perm, noise)

        def evaluate(self, noise: Noise):
            self._save("eval", noise)
            return super().evaluate(noise)

        def _save(self, kind: str, noise: Noise) -> None:
            if noise.eps is not None:
                self.saved += 1
                np.save(Path(os.environ["VAE_BENCH_SPY_DIR"]) / f"{self.name}-{self.saved:02d}-{kind}.npy", noise.eps)

    Spy.__name__ = f"Spy{cls.__name__}"
    return Spy


SpyTorchEagerBackend = spy(TorchEagerBackend)
SpyTorchReferenceBackend = spy(TorchReferenceBackend)
SpyJaxBackend = spy(JaxBackend)
