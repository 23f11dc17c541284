"""The seed ensemble's members one after another inside its programs: engine option `members=sequential`.

Why: on XLA:CPU the vmapped step (ensemble_programs.py) costs more per member than the single engine's
(its matrix products become batched dots, its convolutions grouped ones on a slow path), and a CPU
gains nothing from batching members (one member's step already fills it). So here every member runs
the single engine's own functions on its slice of the stacked state: the same math and the same
per-member HLO as a single-seed run (tests/test_jax_ensemble.py), nothing mixing members.

* epoch=scan: ONE jitted program per epoch, a `lax.fori_loop` over the members of the single engine's
  epoch (programs.programs' lax.scan over the batches, inlined) on member i's slice of the stacked state,
  written back in place (the state is donated and carried: a `lax.map` would build its outputs in new
  buffers and copy the whole state each epoch). Counter noise is generated inside, one member's epoch
  at a time.
* epoch=loop (the conv workload on the CPU, whose convolutions XLA:CPU runs slowly inside a loop body)
  and the lockstep step: a jitted member step whose member index is an argument; it updates that
  member's slice of the donated stacked state in place, and the engine calls it member by member, so
  no convolution sits inside a loop body.
* evaluation and jax's own noise draws are the vmap arrangement's (ensemble_programs.py).

The programs take the vmap arrangement's arguments (EnsemblePrograms), plus the member index (an int32
scalar, after the static batch size) for the member steps.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from backends.jax import MEMBERS
from backends.jax.ensemble_programs import KINDS, EnsemblePrograms, ensemble_programs
from backends.jax.programs import functions, programs
from harness.config import ModelConfig
from harness.errors import HarnessError


def member_arrangement(option: str, platform: str) -> str:
    """'vmap' or 'sequential' for the engine option `members` ('auto', 'vmap' or 'sequential') on a device
    of `platform` (jax.Device.platform). auto = sequential on the CPU (see the module docstring), vmap
    elsewhere: a GPU is latency-bound at these model sizes, and batching the members is what fills it."""
    if option not in MEMBERS:
        raise HarnessError(f"jax members {option!r}: choose from {', '.join(MEMBERS)}")
    if option != "auto":
        return option
    return "sequential" if platform == "cpu" else "vmap"


def _member(tree, i):
    """Member i's slice of a stacked pytree (i traced)."""
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), tree)


def _with_member(tree, i, value):
    """The stacked pytree with member i replaced by `value` (in place when the stack is donated)."""
    return jax.tree.map(lambda a, v: jax.lax.dynamic_update_index_in_dim(a, v, i, 0), tree, value)


@functools.cache
def sequential_programs(m: ModelConfig, make_optimizer: Callable[[ModelConfig], optax.GradientTransformation],
                        precision: str = "float32") -> EnsemblePrograms:
    """The sequential-members programs for `m` (arguments as programs.functions)."""
    f = functions(m, make_optimizer, precision)
    single_epoch = programs(m, make_optimizer, precision).epoch  # jitted; inlined (donation ignored) when traced

    def epoch(kind: str, state, train_x, perms, noise_in):
        n = perms.shape[1]

        def member(i, carry):
            state, totals = carry
            member_noise = _member(noise_in, i)
            eps = member_noise if kind == "array" else f.counter_noise(*member_noise, 0, n)
            member_state, total = single_epoch(_member(state, i), train_x, _member(perms, i), eps)
            return _with_member(state, i, member_state), totals.at[i].set(total)
        return jax.lax.fori_loop(0, perms.shape[0], member, (state, jnp.zeros(perms.shape[0], jnp.float32)))

    def member_step(state, i, x, eps):
        member_state, loss = f.step(_member(state, i), x, eps)
        return _with_member(state, i, member_state), loss

    def batch_step(kind: str, state, totals, train_x, perms, noise_in, start, size: int, i):
        rows = jax.lax.dynamic_slice_in_dim(_member(perms, i), start, size)  # member i's batch
        member_noise = _member(noise_in, i)
        eps = (jax.lax.dynamic_slice_in_dim(member_noise, start, size) if kind == "array"
               else f.counter_noise(*member_noise, start, size))
        state, loss = member_step(state, i, jnp.take(train_x, rows, axis=0), eps)
        return state, totals.at[i].add(loss)

    return dataclasses.replace(
        ensemble_programs(m, make_optimizer, precision),
        epoch={k: jax.jit(functools.partial(epoch, k), donate_argnums=0) for k in KINDS},
        batch_step={k: jax.jit(functools.partial(batch_step, k), donate_argnums=(0, 1), static_argnums=6)
                    for k in KINDS},
        step=jax.jit(member_step, donate_argnums=0),
        members="sequential",
    )
