"""`jax-loop`: the jax engine with a Python loop of jitted per-batch steps instead of one lax.scan epoch.

Kept to measure the choice, not registered in backends/__init__.py. Same batches, noise and step as
JaxBackend (backends/jax_flax.py), so the same numbers up to float rounding.

Scan vs loop: the loop pays host-side dispatch for every batch, the scan dispatches once per epoch and
lets XLA keep the state in place across steps, so the scan does less work per epoch (the bigger win
on a GPU, where launch overhead dominates). On a shared CPU the loop's wall time can still look
better, as its extra host thread may win the process a larger share of the cores, so compare CPU
seconds, not wall time, on such machines. Figures, once measured in a committed run:
docs/performance.md.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from backends.base import Noise
from backends.jax_flax import JaxBackend


class JaxLoopBackend(JaxBackend):
    """The alternative epoch: a Python loop calling a jitted, AOT-compiled step per batch."""

    name = "jax-loop"

    def _compile_training(self) -> None:
        """One executable per distinct batch size (the full batch and the kept partial one)."""
        scalar = self._spec((), jnp.int32)
        args = (self.state, self._spec((), jnp.float32), self.train_x, self._spec((self.n,), jnp.int32),
                self._eps_spec(self.n), scalar)
        self._batch_exe = {size: self.fn.batch_step.lower(*args, size).compile()
                           for size in set(self.m.batch_sizes(self.n))}

    def train_epoch(self, perm: np.ndarray, noise: Noise) -> float:
        if not self._compiled:
            self.warmup()
        perm_d = self._put(perm.astype(np.int32))
        eps = self._noise(noise, self.n)
        total = self._put(np.float32(0))
        start = 0
        for size in self.m.batch_sizes(self.n):
            self.state, total = self._batch_exe[size](self.state, total, self.train_x, perm_d, eps,
                                                      self._put(np.int32(start)))
            start += size
        return float(total) / self.n

    def describe(self) -> dict[str, str]:
        """How this run executes its training epoch, for the record (backend_info)."""
        return {"arrangement": "jit-step-loop",
                "step": "a Python loop over the batches, one jitted, AOT-compiled step per batch (one "
                        "executable per batch size); params, Adam state and the loss total donated",
                "optimizer": "optax.adam", "eval": "jitted, AOT-compiled"}
