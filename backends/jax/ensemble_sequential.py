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
  and the lockstep step: the stacked state is split into its members once (`split`), each member takes
  its batches in turn through a jitted step on its own donated state (`batch_step`, which picks its
  permutation rows and noise by member index; lockstep: the single engine's own step), and the members
  are stacked back (`stack`). (A step updating its member's slice of the whole stacked state copies
  that state on every call.)
* evaluation: a jitted program of one member's evaluation, member index an argument, called member by
  member (the vmap arrangement's lax.map over members runs the conv workload's convolutions inside a
  loop body). jax's own noise draws are the vmap arrangement's (ensemble_programs.py).
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

_IN_TURN = ("the {size} members one after another, each running the jax engine's own functions on its slice "
            "of the stacked params and Adam state; ")
DESCRIBE = {"scan": _IN_TURN + "one jitted, AOT-compiled program per epoch: lax.fori_loop over the members of the "
                               "jax engine's epoch (lax.scan over the batches); state donated",
            "loop": _IN_TURN + "the state split into its members, each member's batches in a Python loop, one "
                               "jitted, AOT-compiled step per batch size (member state and loss total donated), "
                               "the members stacked back",
            "eval": "jitted, AOT-compiled; one member's evaluation (member index an argument), member by member"}


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
    """The stacked pytree with member i replaced by `value` (in place in a loop carrying the stack)."""
    return jax.tree.map(lambda a, v: jax.lax.dynamic_update_index_in_dim(a, v, i, 0), tree, value)


@functools.cache
def sequential_programs(m: ModelConfig, make_optimizer: Callable[[ModelConfig], optax.GradientTransformation],
                        precision: str = "float32") -> EnsemblePrograms:
    """The sequential-members programs for `m` (arguments as programs.functions)."""
    f = functions(m, make_optimizer, precision)
    single = programs(m, make_optimizer, precision)  # jitted; inlined (donation ignored) when traced

    def epoch(kind: str, state, train_x, perms, noise_in):
        n = perms.shape[1]

        def member(i, carry):
            state, totals = carry
            member_noise = _member(noise_in, i)
            eps = member_noise if kind == "array" else f.counter_noise(*member_noise, 0, n)
            member_state, total = single.epoch(_member(state, i), train_x, _member(perms, i), eps)
            return _with_member(state, i, member_state), totals.at[i].set(total)
        return jax.lax.fori_loop(0, perms.shape[0], member, (state, jnp.zeros(perms.shape[0], jnp.float32)))

    def split(state):
        return tuple(_member(state, i) for i in range(jax.tree.leaves(state)[0].shape[0]))

    def stack(members):
        return jax.tree.map(lambda *a: jnp.stack(a), *members)

    def batch_step(kind: str, member_state, total, train_x, perms, noise_in, start, size: int, i):
        rows = jax.lax.dynamic_slice_in_dim(_member(perms, i), start, size)  # member i's batch
        member_noise = _member(noise_in, i)
        eps = (jax.lax.dynamic_slice_in_dim(member_noise, start, size) if kind == "array"
               else f.counter_noise(*member_noise, start, size))
        member_state, loss = f.step(member_state, jnp.take(train_x, rows, axis=0), eps)
        return member_state, total + loss

    def evaluate(kind: str, params, test_x, noise_in, i):
        member_noise = _member(noise_in, i)
        eps = member_noise if kind == "array" else f.counter_noise(*member_noise, 0, test_x.shape[0])
        return f.evaluate(_member(params, i), test_x, eps)

    return dataclasses.replace(
        ensemble_programs(m, make_optimizer, precision),
        epoch={k: jax.jit(functools.partial(epoch, k), donate_argnums=0) for k in KINDS},
        batch_step={k: jax.jit(functools.partial(batch_step, k), donate_argnums=(0, 1), static_argnums=6)
                    for k in KINDS},
        evaluate={k: jax.jit(functools.partial(evaluate, k)) for k in KINDS},
        step=single.step,  # the single engine's: (member state, x, eps) -> (member state, loss), donated
        members="sequential", split=jax.jit(split), stack=jax.jit(stack), describe=DESCRIBE,
    )
