"""JAX: its engine (jax, Flax NNX + Optax), its options, and everything else the harness asks of jax
(GPU check, the persistent compilation cache, versions, IWAE evaluator).

Importing this package does not import jax: it only declares where those things live, for the
registry (backends/__init__.py). The modules beside it import jax and run in child processes.
"""
from __future__ import annotations

from backends.spec import BackendSpec, CompilerCache, Framework

FRAMEWORK = Framework(
    "jax", "jax", gpu_check="backends.jax.gpu_check", iwae="backends.jax.iwae", info="backends.jax.info",
    # no minimum compile time, so the small programs of these models are kept too
    caches=(CompilerCache("jax", "jax", "JAX_COMPILATION_CACHE_DIR",
                          {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}),))

EPOCHS = ("auto", "scan", "loop")  # the engine's epoch: see backends/jax/engine.py epoch_arrangement
# How a seed ensemble (--ensemble) arranges its members: see backends/jax/ensemble_sequential.py
# member_arrangement. The single-seed engine shares the options and ignores this one.
MEMBERS = ("auto", "vmap", "sequential")

ENGINE = BackendSpec("backends.jax.engine", "JaxBackend", "jax", "jax",
                     "Flax NNX + Optax adam, jitted lax.scan epoch (or loop of jitted steps) with donated state",
                     compiler="jax", options={"epoch": EPOCHS, "members": MEMBERS},
                     ensemble="backends.jax.ensemble:JaxEnsemble")
