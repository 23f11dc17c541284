"""The environment a framework child process (a training worker, the probe, an IWAE evaluation) starts with.

One setting so far: MKL, torch's CPU BLAS, does not promise bit-identical results from run to run
unless its Conditional Numerical Reproducibility is on, so `MKL_CBWR=AUTO` (standard CNR: the code path
MKL picks for this processor, a fixed order of sums for a fixed thread count, which the harness fixes)
is set unless the user exported a value: `MKL_CBWR=COMPATIBLE` (identical across processors), or
`MKL_CBWR=` (empty) to turn it off. The record shows which applied (backends/info.py). It does not
make torch eager on two threads repeat bit for bit (docs/correctness.md, "Run-to-run repeatability":
the cause of that is not known). It must be in the environment before MKL initialises, hence here,
at the child's start. XLA:CPU does not use MKL, so jax is unaffected.
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
