"""The environment a framework child process (a training worker, the probe, an IWAE evaluation) starts with.

One setting so far, for repeatable arithmetic: MKL, torch's CPU BLAS, does not promise bit-identical
results from run to run, even with the same inputs and thread count, and two identical torch runs
were seen to differ in the last float32 bits of the loss, in CI and here (the measurements are in
docs/correctness.md, "Run-to-run repeatability"). Conditional Numerical Reproducibility fixes the
order of MKL's sums for a fixed thread count, which the harness fixes: `MKL_CBWR=AUTO` keeps the code
path MKL picks for this processor. (AUTO,STRICT, which also frees some routines from the thread
count, changes the last bits of the runs' losses against the recorded golden run; AUTO does not.) A value
the user exported wins: `MKL_CBWR=COMPATIBLE` (identical across processors), or `MKL_CBWR=` (empty)
to turn the mode off; the record shows which applied (backends/info.py). It must be in the
environment before MKL initialises, hence here, at the child's start. XLA:CPU does not use MKL, so
jax is unaffected.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

REPEATABLE_BLAS = {"MKL_CBWR": "AUTO"}


def framework_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the repeatable-arithmetic settings added
    where `base` does not set them itself."""
    base = os.environ if base is None else base
    return {**REPEATABLE_BLAS, **base}
