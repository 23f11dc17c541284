"""The seed ensemble's jitted functions: the single-seed functions (programs.functions) vmapped over members.

Functional, as the single engine: the model is `nnx.split` once and `nnx.merge`d inside the traced
function, and `jax.vmap` maps that function over the stacked params, the Optax Adam state, the batch
and the noise. Not `nnx.vmap` over modules: graph traversal per call made a vmapped Flax ensemble
slower than a Python loop (jax#15339). Each member runs the single engine's step, so the same math;
nothing mixes members (every loss and gradient is per member, Adam is elementwise), so a member that
turns NaN leaves the others alone. For a conv workload, per-member kernels under vmap become one
grouped convolution (jax#26568).

The arrangement is meant for GPUs (engine option `members=vmap`, auto off the CPU). On XLA:CPU it costs
more per member than the single engine (batched dots; grouped convolutions take a slow path), so there
the members run one after another instead: ensemble_sequential.py.

The noise of a pass reaches a program in one of two forms ("kind"):
* "array": (N, n, latent) float32 on the device (the harness's arrays, or jax's own draws made by `noise`);
* "counter": (seeds, epochs), two (N,) uint32: the harness counter noise generated inside the program,
  batch by batch (rows start..start + size - 1 of member i's (seed, epoch) stream), so none crosses.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from backends.jax.programs import functions
from harness.config import ModelConfig

KINDS = ("array", "counter")
_VMAPPED = ("the jax engine's step vmapped over the {size} members (jax.vmap over stacked params, Adam state, "
            "batches and noise; nnx.merge inside the trace); ")
DESCRIBE = {"scan": _VMAPPED + "one jitted, AOT-compiled program per epoch: lax.scan over the full batches, "
                               "then the partial batch; state donated",
            "loop": _VMAPPED + "a Python loop over the batches, one jitted, AOT-compiled step per batch size; "
                               "state and loss totals donated",
            "eval": "jitted, AOT-compiled; lax.map over the members"}


@dataclass(frozen=True)
class EnsemblePrograms:
    """The jitted ensemble functions of one model config, optimiser and precision (cached per process)."""

    epoch: dict[str, Callable]       # kind -> (state, train_x, perms, noise_in) -> (state, (N,) loss sums); state donated
    batch_step: dict[str, Callable]  # kind -> (state, totals, train_x, perms, noise_in, start, size) -> (state, totals)
    evaluate: dict[str, Callable]    # kind -> (params, test_x, noise_in) -> ((N,) sums at z = mu, (N,) at sampled z)
                                     # (sequential: member i's, i an argument after noise_in)
    step: Callable                   # (state, x (N, B, D), eps (N, B, L)) -> (state, (N,) losses); state donated
    noise: Callable                  # (seeds (N,) int32, n) -> jax's own draws (N, n, L), `--noise framework`
    # "vmap", or "sequential" (ensemble_sequential.py), where batch_step and step work on ONE member's state,
    # split off the stacked state (and stacked back) by these two: state -> (N member states), and back
    members: str = "vmap"
    # epoch option -> the step ({size}: the ensemble's), and "eval" -> the evaluation, for the record
    describe: dict[str, str] = dataclasses.field(default_factory=lambda: DESCRIBE)
    split: Callable | None = None
    stack: Callable | None = None


@functools.cache
def ensemble_programs(m: ModelConfig, make_optimizer: Callable[[ModelConfig], optax.GradientTransformation],
                      precision: str = "float32") -> EnsemblePrograms:
    """The ensemble programs for `m` (arguments as programs.functions)."""
    f = functions(m, make_optimizer, precision)
    bs = m.batch_size
    vstep = jax.vmap(f.step)

    def batch_eps(kind: str, noise_in, start, size: int):
        """Every member's noise rows start .. start + size - 1: (N, size, latent)."""
        if kind == "array":
            return jax.lax.dynamic_slice_in_dim(noise_in, start, size, axis=1)
        seeds, epochs = noise_in
        return jax.vmap(lambda s, e: f.counter_noise(s, e, start, size))(seeds, epochs)

    def batch(kind: str, state, train_x, perms, noise_in, start, size: int):
        idx = jax.lax.dynamic_slice_in_dim(perms, start, size, axis=1)  # member i's batch: perms[i, start:start+size]
        return vstep(state, jnp.take(train_x, idx, axis=0), batch_eps(kind, noise_in, start, size))

    def epoch(kind: str, state, train_x, perms, noise_in):
        n = perms.shape[1]
        full = n // bs * bs

        def body(state, start):
            return batch(kind, state, train_x, perms, noise_in, start, bs)

        state, losses = jax.lax.scan(body, state, jnp.arange(0, full, bs, dtype=jnp.int32))  # losses (n // bs, N)
        total = jnp.sum(losses, axis=0)
        if n > full:  # the kept partial batch: one more (static-shaped) step in the same program
            state, loss = batch(kind, state, train_x, perms, noise_in, jnp.int32(full), n - full)
            total = total + loss
        return state, total

    def batch_step(kind: str, state, totals, train_x, perms, noise_in, start, size: int):
        state, loss = batch(kind, state, train_x, perms, noise_in, start, size)
        return state, totals + loss

    def evaluate(kind: str, params, test_x, noise_in):
        """One member after the other (lax.map): the device holds one member's activations at a time."""
        n = test_x.shape[0]

        def member(args):
            p, member_noise = args
            eps = member_noise if kind == "array" else f.counter_noise(*member_noise, 0, n)
            return f.evaluate(p, test_x, eps)
        return jax.lax.map(member, (params, noise_in))

    def noise(seeds, n: int):
        return jax.vmap(lambda s: f.noise(s, n))(seeds)

    return EnsemblePrograms(
        epoch={k: jax.jit(functools.partial(epoch, k), donate_argnums=0) for k in KINDS},
        batch_step={k: jax.jit(functools.partial(batch_step, k), donate_argnums=(0, 1), static_argnums=6)
                    for k in KINDS},
        evaluate={k: jax.jit(functools.partial(evaluate, k)) for k in KINDS},
        step=jax.jit(vstep, donate_argnums=0),
        noise=jax.jit(noise, static_argnums=1),
    )
