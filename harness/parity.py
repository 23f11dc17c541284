"""Lockstep parity: proof that every backend computes the same training step as the float64 reference.

All backends start from the same `init_params(seed)` and take N Adam steps on identical MNIST batches
with the reparameterisation noise supplied by the harness as arrays; harness.reference runs the same
steps in float64 and judges. Equal-looking losses from a full run are not proof; this is.

Teacher forcing. Before each step every backend is set to the reference's state (params and Adam
moments, rounded to float32), takes one step, and its new params are compared with the reference's.
Why not let each backend run free for N steps: a ReLU input within float32 rounding of zero may take
the other branch in a correct float32 backend, and Adam's normalised steps then spread that legitimate
difference chaotically until it is as large as a real bug. From a common state each step is checked
strictly and nothing compounds. The free-running distance is still reported, for information.

Pass rule, per backend, over all N steps: every per-step batch loss within LOSS_RTOL of the reference,
and in each step at most KINK_BUDGET parameter entries outside STEP_RTOL * max|ref| of their tensor.
The measured counts behind these constants, for correct backends and for mutants, are in
docs/correctness.md with the committed runs (reports/parity-cpu*) they come from.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import backends
from harness import reference
from harness.config import PARAM_ORDER, RunConfig, epoch_permutation, init_params

# Per-step loss agreement (relative). Guards against a wrong reduction or KL term, which changes the
# batch loss by orders of magnitude more than float32 rounding of a sum of ~1e5 terms does; a
# mean-instead-of-sum loss hides from the parameter check (Adam is nearly scale invariant) but not here.
LOSS_RTOL = 1e-4
# Per entry, per teacher-forced step: |cand - ref| <= STEP_RTOL * max|ref| of the tensor. One step from a
# common state moves a weight by at most ~lr, and float32 gets that step right to a small fraction of
# it, so a correct backend stays far inside; a wrong formula moves entries by O(lr). Measured worst
# entries: docs/correctness.md.
STEP_RTOL = reference.PARITY_RTOL
# Entries per step allowed beyond STEP_RTOL: 64, one in 10,000 of the model's 652,824 parameters.
# Two legitimate float32 effects move isolated entries by up to ~lr: a ReLU input within rounding of
# zero taking the other branch, and a gradient entry at rounding-noise level (a sum that cancels),
# which Adam's normalised step turns into an O(lr) difference. They touch a handful of entries, while
# every wrong formula moves a large share of a tensor; the budget sits between the two. Counts of
# correct backends and of the mutants, with their source: docs/correctness.md.
KINK_BUDGET = 64


@dataclass
class BackendParity:
    """How one backend's lockstep run compares with the reference."""

    backend: str
    worst: dict[str, float]          # per tensor: largest |cand - ref| / max|ref| over all steps
    outliers: list[int]              # per step: entries beyond STEP_RTOL
    max_loss_rel_err: float          # over all steps
    free_running: dict[str, float] = field(default_factory=dict)  # per tensor, after N free steps

    @property
    def ok(self) -> bool:
        return max(self.outliers, default=0) <= KINK_BUDGET and self.max_loss_rel_err <= LOSS_RTOL


def lockstep_inputs(train_x: np.ndarray, steps: int, seed: int, batch_size: int, latent: int):
    """The batches (walking the harness permutation of epoch 1) and noise arrays of `steps` steps."""
    perm = epoch_permutation(seed, 1, train_x.shape[0])
    rng = np.random.default_rng([seed, 0xEB5])
    batches, noise = [], []
    for i in range(steps):
        idx = perm[(i * batch_size) % len(perm):][:batch_size]
        batches.append(np.ascontiguousarray(train_x[idx]))
        noise.append(rng.standard_normal((len(idx), latent)).astype(np.float32))
    return batches, noise


def to_state32(params: dict, adam: reference.AdamState) -> dict[str, np.ndarray]:
    """A reference state as the framework-neutral float32 state dict every backend loads."""
    state = {k: np.asarray(params[k], np.float32) for k in PARAM_ORDER}
    state.update({f"adam.m.{k}": np.asarray(adam.m[k], np.float32) for k in PARAM_ORDER})
    state.update({f"adam.v.{k}": np.asarray(adam.v[k], np.float32) for k in PARAM_ORDER})
    state["adam.step"] = np.array(adam.step, np.int64)
    return state


def from_state32(state: dict[str, np.ndarray]) -> tuple[dict, reference.AdamState]:
    f64 = lambda a: np.asarray(a, np.float64)
    return ({k: f64(state[k]) for k in PARAM_ORDER},
            reference.AdamState(int(state["adam.step"]), {k: f64(state[f"adam.m.{k}"]) for k in PARAM_ORDER},
                                {k: f64(state[f"adam.v.{k}"]) for k in PARAM_ORDER}))


def reference_step(state: dict[str, np.ndarray], x, eps, model) -> tuple[dict, reference.AdamState, float]:
    """One float64 step from a float32 state dict: new params, new Adam state, the batch loss."""
    params, adam = from_state32(state)
    loss, grads = reference.loss_and_grad(params, x, eps)
    new_params, new_adam = reference.adam_update(params, grads, adam, model)
    return new_params, new_adam, loss


def relative_errors(ref: dict, cand: dict) -> dict[str, np.ndarray]:
    """|cand - ref| / max|ref| per entry, per tensor: rounding in a tensor scales with its largest entries."""
    return {k: np.abs(np.asarray(cand[k], np.float64) - ref[k]) / np.abs(ref[k]).max() for k in PARAM_ORDER}


@dataclass
class ReferenceChain:
    """The reference's teacher-forcing chain: the float32 state before each step, and the float64
    params and batch loss after it. Computed once and shared by every backend."""

    inputs: list[tuple[np.ndarray, np.ndarray]]  # (batch, noise) per step
    states: list[dict[str, np.ndarray]]
    params_after: list[dict[str, np.ndarray]]
    losses: list[float]
    free_running: dict[str, np.ndarray]            # float64 params after all steps without forcing


def reference_chain(params: dict, batches, noise, model) -> ReferenceChain:
    state = to_state32(reference._cast(params), reference.adam_init(params))
    states, after, losses = [], [], []
    for x, eps in zip(batches, noise):
        ref_params, ref_adam, ref_loss = reference_step(state, x, eps, model)
        states.append(state)
        after.append(ref_params)
        losses.append(ref_loss)
        state = to_state32(ref_params, ref_adam)
    free, _ = reference.train_steps(params, batches, noise, model)
    return ReferenceChain(list(zip(batches, noise)), states, after, losses, free)


def run_backend(name: str, chain: ReferenceChain, config: RunConfig, free_running: bool = True) -> BackendParity:
    """Teacher-forced lockstep of one backend; then, for information, a free-running pass."""
    backend = backends.create(name)
    batches = [x for x, _ in chain.inputs]
    backend.setup(chain.states[0], np.concatenate(batches), batches[0],
                  dataclasses.replace(config, backends=(name,)))
    worst = {k: 0.0 for k in PARAM_ORDER}
    outliers, loss_err = [], 0.0
    for (x, eps), state, ref_params, ref_loss in zip(chain.inputs, chain.states, chain.params_after, chain.losses):
        backend.set_state(state)
        loss = backend.lockstep_step(x, eps)
        errs = relative_errors(ref_params, backend.get_state())
        outliers.append(sum(int((e > STEP_RTOL).sum()) for e in errs.values()))
        worst = {k: max(worst[k], float(errs[k].max())) for k in PARAM_ORDER}
        loss_err = max(loss_err, abs(loss - ref_loss) / abs(ref_loss))
    free = {}
    if free_running:
        backend.set_state(chain.states[0])
        for x, eps in chain.inputs:
            backend.lockstep_step(x, eps)
        free = {k: float(e.max()) for k, e in relative_errors(chain.free_running, backend.get_state()).items()}
    return BackendParity(name, worst, outliers, loss_err, free)


def run(names: list[str], train_x: np.ndarray, steps: int, config: RunConfig,
        free_running: bool = True) -> list[BackendParity]:
    """Lockstep every backend in `names` against the float64 reference."""
    m = config.model
    params = init_params(config.seed, m)
    batches, noise = lockstep_inputs(train_x, steps, config.seed, m.batch_size, m.latent_dim)
    chain = reference_chain(params, batches, noise, m)
    return [run_backend(name, chain, config, free_running) for name in names]


def add_subcommands(sub) -> None:
    from harness.cli import add_run_flags, positive_int
    p = sub.add_parser("parity", help="lockstep every backend against the float64 NumPy reference")
    add_run_flags(p, default_epochs=None)
    p.add_argument("--steps", type=positive_int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="also write DIR/parity.json (every figure, config, environment) and DIR/parity.md")
    p.set_defaults(func=cmd_parity)


def cmd_parity(args, argv) -> int:
    from rich.table import Table

    from harness import data
    from harness.cli import run_config
    from harness.console import console

    config = run_config(args)
    if args.out is not None:
        from harness import atomic
        atomic.ensure_writable_dir(args.out, "--out folder")  # fail before minutes of work, not after
    mnist = data.load(args.data_dir)
    from harness import caches
    with caches.activated(config.cold_compile):  # the backends train in this process: same caches as a run
        reports = run(list(config.backends), mnist.train_x, args.steps, config)
    if args.out is not None:
        from harness import measure, parity_report
        doc = parity_report.to_dict(reports, config, args.steps, list(argv),
                                    measure.framework_info("parity", config))
        parity_report.write(args.out, doc)
    table = Table(title=f"lockstep parity over {args.steps} teacher-forced steps vs the float64 reference: "
                        f"worst |diff| / max|ref| per tensor (tolerance {STEP_RTOL:g})")
    table.add_column("parameter")
    for r in reports:
        table.add_column(r.backend, justify="right")
    for name in PARAM_ORDER:
        table.add_row(name, *(_cell(r.worst[name], r.worst[name] <= STEP_RTOL) for r in reports))
    table.add_row("entries beyond tol. (worst step)",
                  *(_count(max(r.outliers), max(r.outliers) <= KINK_BUDGET) for r in reports))
    table.add_row("per-step loss rel. error", *(_cell(r.max_loss_rel_err, r.max_loss_rel_err <= LOSS_RTOL) for r in reports))
    table.add_row("free-running, after all steps (info)", *(f"{max(r.free_running.values()):.1e}" for r in reports))
    console.print(table)
    if args.out is not None:
        console.print(f"wrote {args.out / 'parity.json'} and {args.out / 'parity.md'}")
    bad = [r.backend for r in reports if not r.ok]
    if bad:
        console.print(f"[red]disagree with the reference: {', '.join(bad)}[/red]")
        return 1
    console.print(f"all {len(reports)} backends agree with the float64 reference")
    return 0


def _cell(value: float, ok: bool) -> str:
    return f"{value:.1e}" if ok else f"[yellow]{value:.1e}[/yellow]"


def _count(n: int, ok: bool) -> str:
    return f"{n} (budget {KINK_BUDGET})" if ok else f"[red]{n} FAIL[/red]"
