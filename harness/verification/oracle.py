"""The float64 NumPy judge of correctness for the lockstep parity mode: Adam, steps and the verdict.

The workload's oracle (workloads/<name>/oracle.py) gives the loss and its hand-written gradient; this
module adds torch.optim.Adam with its default settings, runs N steps in float64, and `compare` decides
whether a backend's float32 parameters agree with them. Every backend (torch, torch.compile, JAX) is
run for the same N steps from the same float32 weights, batches and noise. Nothing here imports torch
or jax.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.config import ModelConfig
from workloads.bernoulli_vae import as_float64

# Parity tolerance, used by `compare` per tensor on the RMS of the difference:
#     rms(cand - ref) <= PARITY_ATOL + PARITY_RTOL * rms(ref)      (rms = Frobenius norm / sqrt(size))
# harness/verification/parity.py also uses PARITY_RTOL, per entry of one teacher-forced step (its STEP_RTOL).
#
# Why RMS and not the largest elementwise error: a float32 backend legitimately disagrees with float64 on
# a few isolated entries. Adam's step lr*mhat/(sqrt(vhat) + eps) is not proportional to the gradient
# (at step 1 it is +-lr whatever |g|), so an entry whose gradient sits at the rounding-noise level, or a
# weight fed by one sample whose ReLU is at its kink, moves by a different amount. Such outliers are
# orders of magnitude larger, relative to max|ref|, than the RMS error of the tensor, so a max-based
# metric would need a tolerance that also lets real bugs through.
#
# Why free-running comparisons must be SHORT: once one ReLU pre-activation lands within rounding of 0,
# the two runs take different kinks, the few weights fed only by that sample move by O(lr) differently,
# that flips more kinks, and the gap grows by orders of magnitude within tens of steps (a cascade, not
# a bug). The chance of a first flip grows with the step count; hence harness/verification/parity.py teacher-forces.
#
# What RTOL separates: float32 rounding over a few free steps usually stays far below it (one kink
# event can bring a run close to it); formula bugs (Adam's eps inside the sqrt, a mean instead of a sum
# loss, TF32-like rounding, wrong noise) land above it. A cascade can start within a few steps and
# cross it, so a short free-running comparison is evidence, not proof; parity's teacher-forced steps
# are the gate. The subtlest bug, mean vs sum loss, shows only through Adam's eps (Adam is otherwise
# scale invariant), so the per-step losses are compared too. The measured figures and their committed
# source (benchmarks/parity_tolerance.py -> reports/parity-tolerance) are in docs/correctness.md.
# ATOL is a floor for a tensor whose oracle value is ~0 (none in this model): a few float32 ulps of a
# typical weight, negligible next to RTOL * rms(ref).
PARITY_RTOL = 1e-4
PARITY_ATOL = 1e-8



@dataclass
class AdamState:
    """Adam's step count and first/second moment estimates, one array per parameter."""

    step: int
    m: dict
    v: dict


def adam_init(params: dict[str, np.ndarray]) -> AdamState:
    """Zero moments at step 0, as torch.optim.Adam and optax.adam start."""
    p = as_float64(params)
    return AdamState(step=0, m={k: np.zeros_like(a) for k, a in p.items()},
                     v={k: np.zeros_like(a) for k, a in p.items()})


def adam_update(
    params: dict[str, np.ndarray], grads: dict[str, np.ndarray], state: AdamState,
    model: ModelConfig = ModelConfig(),
) -> tuple[dict[str, np.ndarray], AdamState]:
    """One step of torch.optim.Adam with default options (no weight decay, no amsgrad).

    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr * mhat / (sqrt(vhat) + eps) with bias-corrected
    mhat = m/(1-b1^t), vhat = v/(1-b2^t) and eps OUTSIDE the square root (torch and optax agree). torch
    writes it as (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps): the same number up to rounding.
    Returns new arrays; the inputs are not modified.
    """
    b1, b2, lr, eps = model.beta1, model.beta2, model.learning_rate, model.adam_eps
    t = state.step + 1
    p, g = as_float64(params), as_float64(grads)
    new_p, new_m, new_v = {}, {}, {}
    for k in p:
        new_m[k] = b1 * state.m[k] + (1.0 - b1) * g[k]
        new_v[k] = b2 * state.v[k] + (1.0 - b2) * g[k] ** 2
        m_hat = new_m[k] / (1.0 - b1**t)
        v_hat = new_v[k] / (1.0 - b2**t)
        new_p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return new_p, AdamState(step=t, m=new_m, v=new_v)


def train_steps(
    params: dict[str, np.ndarray], batches: list[np.ndarray], eps_list: list[np.ndarray],
    model: ModelConfig = ModelConfig(),
) -> tuple[dict[str, np.ndarray], list[float]]:
    """Run len(batches) lockstep Adam steps from `params` (float32 init, cast to float64).

    Step i uses batches[i] and noise eps_list[i]. Returns the final float64 parameters and each step's
    batch-sum loss, evaluated before that step's update (what loss.item() shows in pytorch/examples).
    """
    if len(batches) != len(eps_list):
        raise ValueError(f"{len(batches)} batches but {len(eps_list)} noise arrays")
    p = as_float64(params)
    state = adam_init(p)
    losses = []
    for x, eps in zip(batches, eps_list):
        value, grads = model.oracle().loss_and_grad(p, x, eps)
        p, state = adam_update(p, grads, state, model)
        losses.append(value)
    return p, losses


def compare(
    oracle: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
    rtol: float = PARITY_RTOL, atol: float = PARITY_ATOL,
) -> list[dict]:
    """Per-tensor parity of a backend's parameters (candidate) against the float64 oracle.

    Decision metric, per tensor: d = cand - ref, rms(a) = sqrt(mean(a**2));
    ok iff every candidate value is finite and rms(d) <= atol + rtol * rms(ref).
    rms_rel_err = rms(d) / rms(ref) is that ratio. The tensor's own magnitude is the scale because
    rounding error is set by the size of the numbers a tensor was computed from, not by each entry (an
    elementwise ratio is unbounded for an entry that crosses zero during training), and the RMS rather
    than the max because float32 Adam legitimately misplaces a few isolated near-zero-gradient entries
    by O(lr) (see PARITY_RTOL; measurements in docs/correctness.md). max_abs_err and
    max_rel_err = max|d| / max|ref| are reported to locate a failure, not to decide it.

    Returns one dict per oracle tensor, in the oracle's order: name, shape, max_abs_err,
    max_rel_err, rms_err, rms_rel_err, ok. A missing tensor or a shape mismatch raises ValueError:
    that is a wiring bug, not a numerical difference.
    """
    missing = sorted(set(oracle) - set(candidate))
    if missing:
        raise ValueError(f"candidate lacks parameters: {', '.join(missing)}")

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else (0.0 if num == 0 else float("inf"))

    rows = []
    for name, ref in oracle.items():
        ref = np.asarray(ref, dtype=np.float64)
        cand = np.asarray(candidate[name], dtype=np.float64)
        if ref.shape != cand.shape:
            raise ValueError(f"{name}: candidate shape {cand.shape}, oracle shape {ref.shape}")
        diff = np.abs(cand - ref)  # NaN where the candidate is NaN, so every error below is NaN too
        rms_err, rms_ref = float(np.sqrt(np.mean(diff**2))), float(np.sqrt(np.mean(ref**2)))
        max_err = float(np.max(diff))
        rows.append({
            "name": name, "shape": ref.shape,
            "max_abs_err": max_err, "max_rel_err": ratio(max_err, float(np.max(np.abs(ref)))),
            "rms_err": rms_err, "rms_rel_err": ratio(rms_err, rms_ref),
            "ok": bool(np.all(np.isfinite(cand))) and rms_err <= atol + rtol * rms_ref,
        })
    return rows
