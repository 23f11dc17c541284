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

import dataclasses

from backends.jax_flax import JaxBackend
from harness.config import RunConfig


class JaxLoopBackend(JaxBackend):
    """The jax engine with its epoch option forced to 'loop', whatever the workload and device."""

    name = "jax-loop"
    epoch = "loop"

    def setup(self, params, train_x, test_x, config: RunConfig) -> None:
        options = {**config.engine_options, self.name: {"epoch": "loop"}}
        super().setup(params, train_x, test_x, dataclasses.replace(config, engine_options=options))
