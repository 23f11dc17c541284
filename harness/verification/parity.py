"""Lockstep parity: proof that every backend computes the same training step as the float64 oracle.

All backends start from the same `init_params(seed)` and take N Adam steps on identical MNIST batches
with the reparameterisation noise supplied by the harness as arrays; the workload's float64 oracle (with
harness/verification/oracle.py's Adam) runs the same steps and judges. Equal-looking losses from a full run are not proof; this is.

Teacher forcing. Before each step every backend is set to the oracle's state (params and Adam
moments, rounded to float32), takes one step, and its new params are compared with the oracle's.
Why not let each backend run free for N steps: a ReLU input within float32 rounding of zero may take
the other branch in a correct float32 backend, and Adam's normalised steps then spread that legitimate
difference chaotically until it is as large as a real bug. From a common state each step is checked
strictly and nothing compounds. The free-running distance is still reported, for information.

Pass rule, per backend, over all N steps: every per-step batch loss within LOSS_RTOL of the oracle,
and at most `allowed_kink_steps(N)` steps with more than KINK_BUDGET parameter entries outside
STEP_RTOL * max|ref| of their tensor (kink steps, below).
The measured counts behind these constants, for correct backends and for mutants, are in
docs/correctness.md with the committed runs (reports/parity-cpu*) they come from.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import backends
from harness.config import RunConfig
from harness.draws import init_params, lockstep_inputs
from harness.execution import child_process
from harness.verification import oracle

# Per-step loss agreement (relative). Guards against a wrong reduction or KL term, which changes the
# batch loss by orders of magnitude more than float32 rounding of a sum of ~1e5 terms does; a
# mean-instead-of-sum loss hides from the parameter check (Adam is nearly scale invariant) but not here.
LOSS_RTOL = 1e-4
# Per entry, per teacher-forced step: |cand - ref| <= STEP_RTOL * max|ref| of the tensor. One step from a
# common state moves a weight by at most ~lr, and float32 gets that step right to a small fraction of
# it, so a correct backend stays far inside; a wrong formula moves entries by O(lr). Measured worst
# entries: docs/correctness.md.
STEP_RTOL = oracle.PARITY_RTOL
# Entries per step allowed beyond STEP_RTOL: 64, one in 10,000 of the MLP's 652,824 parameters (one in
# 2,900 of the conv VAE's 186,409).
# Two legitimate float32 effects move isolated entries by up to ~lr: a ReLU input within rounding of
# zero taking the other branch, and a gradient entry at rounding-noise level (a sum that cancels),
# which Adam's normalised step turns into an O(lr) difference. They touch a handful of entries, while
# every wrong formula moves a large share of a tensor; the budget sits between the two. Counts of
# correct backends and of the mutants, with their source: docs/correctness.md.
KINK_BUDGET = 64
# Kink steps. A ReLU input of the DECODER within rounding of zero changes one sample's whole backward
# pass, and with it every encoder weight that sample's active pixels and hidden units touch: hundreds
# of entries of fc1.weight in one step, a legitimate float32 event the budget above cannot absorb.
# Measured (benchmarks/parity_kinks.py, reports/parity-kinks): correct backends (torch, jax), seeds
# 1-30, 50 teacher-forced steps each: 2 of 3000 steps beyond KINK_BUDGET (torch, seed 2: 877 entries;
# seed 11: 91; one step each). KINK_STEP_RATE is that rate's 95 % upper bound (Clopper-Pearson); a run
# of N steps may have as many kink steps as a correct backend exceeds with probability at most
# KINK_FALSE_ALARM. Every mutant has more than KINK_BUDGET outliers in every one of its steps
# (docs/correctness.md), so it fails for any N.
KINK_STEP_RATE = 2.1e-3
KINK_FALSE_ALARM = 0.01


def allowed_kink_steps(steps: int) -> int:
    """The kink steps a correct backend's run of `steps` steps exceeds with probability <= KINK_FALSE_ALARM."""
    from scipy import stats
    k = 0
    while stats.binom.sf(k, steps, KINK_STEP_RATE) > KINK_FALSE_ALARM:
        k += 1
    return k


def kink_steps(outliers: list[int]) -> int:
    """Steps with more than KINK_BUDGET entries beyond STEP_RTOL."""
    return sum(n > KINK_BUDGET for n in outliers)


@dataclass
class BackendParity:
    """How one backend's lockstep run compares with the oracle."""

    backend: str
    worst: dict[str, float]          # per tensor: largest |cand - ref| / max|ref| over all steps
    outliers: list[int]              # per step: entries beyond STEP_RTOL
    max_loss_rel_err: float | None   # over all steps (None: no result)
    free_running: dict[str, float] = field(default_factory=dict)  # per tensor, after N free steps
    error: str | None = None         # why the backend's child produced no result (then nothing else is set)
    frameworks: dict = field(default_factory=dict)  # versions and settings the child recorded

    @property
    def ok(self) -> bool:
        return (self.error is None and kink_steps(self.outliers) <= allowed_kink_steps(len(self.outliers))
                and self.max_loss_rel_err <= LOSS_RTOL)


def to_state32(params: dict, adam: oracle.AdamState) -> dict[str, np.ndarray]:
    """An oracle state as the framework-neutral float32 state dict every backend loads."""
    state = {k: np.asarray(v, np.float32) for k, v in params.items()}
    state.update({f"adam.m.{k}": np.asarray(adam.m[k], np.float32) for k in params})
    state.update({f"adam.v.{k}": np.asarray(adam.v[k], np.float32) for k in params})
    state["adam.step"] = np.array(adam.step, np.int64)
    return state


def from_state32(state: dict[str, np.ndarray]) -> tuple[dict, oracle.AdamState]:
    f64 = lambda a: np.asarray(a, np.float64)
    names = [k for k in state if not k.startswith("adam.")]
    return ({k: f64(state[k]) for k in names},
            oracle.AdamState(int(state["adam.step"]), {k: f64(state[f"adam.m.{k}"]) for k in names},
                             {k: f64(state[f"adam.v.{k}"]) for k in names}))


def oracle_step(state: dict[str, np.ndarray], x, eps, model) -> tuple[dict, oracle.AdamState, float]:
    """One float64 step from a float32 state dict: new params, new Adam state, the batch loss."""
    params, adam = from_state32(state)
    loss, grads = model.oracle().loss_and_grad(params, x, eps)
    new_params, new_adam = oracle.adam_update(params, grads, adam, model)
    return new_params, new_adam, loss


def relative_errors(ref: dict, cand: dict) -> dict[str, np.ndarray]:
    """|cand - ref| / max|ref| per entry, per tensor: rounding in a tensor scales with its largest entries."""
    return {k: np.abs(np.asarray(cand[k], np.float64) - ref[k]) / np.abs(ref[k]).max() for k in ref}


@dataclass
class OracleChain:
    """The oracle's teacher-forcing chain: the float32 state before each step, and the float64
    params and batch loss after it. Computed once and shared by every backend."""

    inputs: list[tuple[np.ndarray, np.ndarray]]  # (batch, noise) per step
    states: list[dict[str, np.ndarray]]
    params_after: list[dict[str, np.ndarray]]
    losses: list[float]
    free_running: dict[str, np.ndarray]            # float64 params after all steps without forcing


def oracle_chain(params: dict, batches, noise, model) -> OracleChain:
    state = to_state32(oracle.as_float64(params), oracle.adam_init(params))
    states, after, losses = [], [], []
    for x, eps in zip(batches, noise):
        ref_params, ref_adam, ref_loss = oracle_step(state, x, eps, model)
        states.append(state)
        after.append(ref_params)
        losses.append(ref_loss)
        state = to_state32(ref_params, ref_adam)
    free, _ = oracle.train_steps(params, batches, noise, model)
    return OracleChain(list(zip(batches, noise)), states, after, losses, free)


def run_backend(name: str, chain: OracleChain, config: RunConfig, free_running: bool = True) -> BackendParity:
    """Teacher-forced lockstep of one backend; then, for information, a free-running pass."""
    backend = backends.create(name)
    batches = [x for x, _ in chain.inputs]
    backend.setup(chain.states[0], np.concatenate(batches), batches[0],
                  dataclasses.replace(config, backends=(name,)))
    worst = {k: 0.0 for k in chain.params_after[0]}
    outliers, loss_err = [], 0.0
    for (x, eps), state, ref_params, ref_loss in zip(chain.inputs, chain.states, chain.params_after, chain.losses):
        backend.set_state(state)
        loss = backend.lockstep_step(x, eps)
        errs = relative_errors(ref_params, backend.get_state())
        outliers.append(sum(int((e > STEP_RTOL).sum()) for e in errs.values()))
        worst = {k: max(worst[k], float(errs[k].max())) for k in worst}
        loss_err = max(loss_err, abs(loss - ref_loss) / abs(ref_loss))
    free = {}
    if free_running:
        backend.set_state(chain.states[0])
        for x, eps in chain.inputs:
            backend.lockstep_step(x, eps)
        free = {k: float(e.max()) for k, e in relative_errors(chain.free_running, backend.get_state()).items()}
    return BackendParity(name, worst, outliers, loss_err, free)


def run_ensemble(name: str, chains: list[OracleChain], config: RunConfig) -> list[BackendParity]:
    """Teacher-forced lockstep of one backend's seed ensemble, member i against its own seed's chain:
    every step sets all members to their oracle states, takes ONE batched step, and judges each member."""
    engine = backends.create_ensemble(name)
    first = [x for x, _ in chains[0].inputs]
    engine.setup([c.states[0] for c in chains], np.concatenate(first), first[0],
                 dataclasses.replace(config, backends=(name,)))
    seeds = [config.seed + i for i in range(len(chains))]
    reports = [BackendParity(f"{name} (ensemble of {len(chains)}, seed {s})", {k: 0.0 for k in chains[0].params_after[0]},
                             [], 0.0) for s in seeds]
    for step in range(len(chains[0].inputs)):
        engine.set_state([c.states[step] for c in chains])
        x = np.stack([c.inputs[step][0] for c in chains])
        eps = np.stack([c.inputs[step][1] for c in chains])
        losses = engine.lockstep_step(x, eps)
        for report, chain, loss, state in zip(reports, chains, losses, engine.get_state()):
            errs = relative_errors(chain.params_after[step], state)
            report.outliers.append(sum(int((e > STEP_RTOL).sum()) for e in errs.values()))
            report.worst = {k: max(report.worst[k], float(errs[k].max())) for k in report.worst}
            ref = chain.losses[step]
            report.max_loss_rel_err = max(report.max_loss_rel_err, abs(float(loss) - ref) / abs(ref))
    return reports


def run(names: list[str], train_x: np.ndarray, steps: int, config: RunConfig,
        free_running: bool = True, ensemble: int = 0) -> list[BackendParity]:
    """Lockstep every backend in `names` against the float64 oracle, each in its own child process
    (harness.verification.parity_worker, started as training workers are), so a framework that crashes
    costs its own result only. With `ensemble` N, each backend's seed ensemble of seeds seed .. seed+N-1
    is judged instead, member by member (one report each)."""
    m = config.model
    chains = []
    for seed in range(config.seed, config.seed + max(1, ensemble)):
        batches, noise = lockstep_inputs(train_x, steps, seed, m.batch_size, m.latent_dim)
        chains.append(oracle_chain(init_params(seed, m), batches, noise, m))
    with tempfile.TemporaryDirectory(prefix="vae-bench-parity-") as tmp:
        chain_file = Path(tmp) / "chain.pickle"
        chain_file.write_bytes(pickle.dumps(chains if ensemble else chains[0]))  # written and read by this harness only
        return [r for name in names for r in _in_child(name, chain_file, config, free_running, Path(tmp), ensemble)]


def _in_child(name: str, chain_file: Path, config: RunConfig, free_running: bool, tmp: Path,
              ensemble: int) -> list[BackendParity]:
    job = tmp / f"{name}.json"
    job.write_text(json.dumps({"backend": name, "chain": str(chain_file), "config": config.to_dict(),
                               "free_running": free_running, "ensemble": ensemble}))
    found: list[dict] = []
    stderr = tmp / f"{name}.stderr"
    code, timed_out = child_process.run(job, stderr, config.timeout, found.append,
                                        module="harness.verification.parity_worker",
                                        cores=child_process.cores_for(config.threads))
    answers = [e for e in found if e["event"] == "parity"]
    if answers and code == 0:
        return [BackendParity(**r) for r in answers[-1]["reports"]]
    errors = [e["message"] for e in found if e["event"] == "error"]
    lines = errors or [line for line in stderr.read_text(errors="replace").splitlines() if line.strip()]
    why = "timed out" if timed_out else f"its process exited with code {code}"
    return [BackendParity(name, {}, [], None, error=f"{why}{': ' + lines[-1] if lines else ''}")]


