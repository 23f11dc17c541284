"""The float64 NumPy judge of correctness for the lockstep parity mode.

A small, readable re-implementation of the pytorch/examples VAE (`vae/main.py`): forward pass, a
hand-written backward pass and torch.optim.Adam with its default settings. Every backend (torch,
torch.compile, JAX) is run for N steps from the same float32 weights, batches and noise; this module
runs the same N steps in float64, and `compare` decides whether each backend's parameters agree with it.

Weights are stored (out, in) like torch.nn.Linear, so a layer is y = x @ W.T + b. The loss, and hence
every gradient, is the SUM over the batch, because that is what pytorch/examples backpropagates.
Nothing here imports torch or jax.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.config import PARAM_ORDER, ModelConfig

# Parity tolerance, used by `compare` per tensor on the RMS of the difference:
#     rms(cand - ref) <= PARITY_ATOL + PARITY_RTOL * rms(ref)      (rms = Frobenius norm / sqrt(size))
# harness/parity.py also uses PARITY_RTOL, per entry of one teacher-forced step (its STEP_RTOL).
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
# a bug). The chance of a first flip grows with the step count; hence harness/parity.py teacher-forces.
#
# What RTOL separates: float32 rounding over a few free steps usually stays far below it (one kink
# event can bring a run close to it); formula bugs (Adam's eps inside the sqrt, a mean instead of a sum
# loss, TF32-like rounding, wrong noise) land above it. A cascade can start within a few steps and
# cross it, so a short free-running comparison is evidence, not proof; parity's teacher-forced steps
# are the gate. The subtlest bug, mean vs sum loss, shows only through Adam's eps (Adam is otherwise
# scale invariant), so the per-step losses are compared too. The measured figures and their committed
# source (benchmarks/parity_tolerance.py -> reports/parity-tolerance) are in docs/correctness.md.
# ATOL is a floor for a tensor whose reference is ~0 (none in this model): a few float32 ulps of a
# typical weight, negligible next to RTOL * rms(ref).
PARITY_RTOL = 1e-4
PARITY_ATOL = 1e-8


def _cast(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}


def _linear(params: dict[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    return x @ params[f"{name}.weight"].T + params[f"{name}.bias"]


def sigmoid(t: np.ndarray) -> np.ndarray:
    """Logistic function; the tanh form never overflows, unlike 1 / (1 + exp(-t))."""
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def kl_divergence(mu: np.ndarray, logvar: np.ndarray) -> float:
    """Analytic KL(N(mu, exp(logvar)) || N(0, I)), summed over batch and latent dims (pytorch/examples)."""
    return float(-0.5 * np.sum(1.0 + logvar - mu**2 - np.exp(logvar)))


def forward(params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray | None) -> dict:
    """The VAE forward pass on one batch x of shape (B, input_dim), values in [0, 1].

    eps is the reparameterisation noise, shape (B, latent_dim); None means z = mu (the eval-mode test
    loss). Returns every intermediate the backward pass needs plus 'loss' = 'bce' + 'kld', batch sums.
    """
    p = _cast(params)
    x = np.asarray(x, dtype=np.float64)
    a1 = _linear(p, "fc1", x)
    h1 = np.maximum(a1, 0.0)
    mu = _linear(p, "fc21", h1)
    logvar = _linear(p, "fc22", h1)
    std = np.exp(0.5 * logvar)
    z = mu if eps is None else mu + np.asarray(eps, dtype=np.float64) * std
    a3 = _linear(p, "fc3", z)
    h3 = np.maximum(a3, 0.0)
    logits = _linear(p, "fc4", h3)
    # BCE(sigmoid(l), x) = softplus(l) - x*l, exactly, without log(0) for saturated pixels.
    bce = float(np.sum(np.logaddexp(0.0, logits) - x * logits))
    kld = kl_divergence(mu, logvar)
    return {
        "x": x, "a1": a1, "h1": h1, "mu": mu, "logvar": logvar, "std": std, "z": z,
        "a3": a3, "h3": h3, "logits": logits, "recon": sigmoid(logits),
        "bce": bce, "kld": kld, "loss": bce + kld,
    }


def loss(params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray | None) -> float:
    """Batch-sum BCE + KLD of one batch (the quantity pytorch/examples backpropagates)."""
    return forward(params, x, eps)["loss"]


def loss_and_grad(
    params: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray | None
) -> tuple[float, dict[str, np.ndarray]]:
    """The batch-sum loss and its gradient w.r.t. every parameter, by a hand-written backward pass."""
    p = _cast(params)
    f = forward(p, x, eps)
    grads: dict[str, np.ndarray] = {}

    def linear_back(name: str, d_out: np.ndarray, inp: np.ndarray) -> np.ndarray:
        grads[f"{name}.weight"] = d_out.T @ inp
        grads[f"{name}.bias"] = d_out.sum(axis=0)
        return d_out @ p[f"{name}.weight"]

    d_logits = f["recon"] - f["x"]  # d/dl [softplus(l) - x*l]
    d_h3 = linear_back("fc4", d_logits, f["h3"])
    d_a3 = d_h3 * (f["a3"] > 0)  # ReLU'(0) = 0, as in torch
    d_z = linear_back("fc3", d_a3, f["z"])
    # KLD = -0.5*sum(1 + lv - mu^2 - e^lv): dKLD/dmu = mu, dKLD/dlv = 0.5*(e^lv - 1).
    d_mu = d_z + f["mu"]
    d_logvar = 0.5 * (np.exp(f["logvar"]) - 1.0)
    if eps is not None:  # z = mu + eps*exp(lv/2) also depends on lv
        d_logvar = d_logvar + d_z * np.asarray(eps, dtype=np.float64) * 0.5 * f["std"]
    d_h1 = linear_back("fc21", d_mu, f["h1"]) + linear_back("fc22", d_logvar, f["h1"])
    d_a1 = d_h1 * (f["a1"] > 0)
    linear_back("fc1", d_a1, f["x"])
    return f["loss"], {k: grads[k] for k in PARAM_ORDER}


@dataclass
class AdamState:
    """Adam's step count and first/second moment estimates, one array per parameter."""

    step: int
    m: dict
    v: dict


def adam_init(params: dict[str, np.ndarray]) -> AdamState:
    """Zero moments at step 0, as torch.optim.Adam and optax.adam start."""
    p = _cast(params)
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
    p, g = _cast(params), _cast(grads)
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
    p = _cast(params)
    state = adam_init(p)
    losses = []
    for x, eps in zip(batches, eps_list):
        value, grads = loss_and_grad(p, x, eps)
        p, state = adam_update(p, grads, state, model)
        losses.append(value)
    return p, losses


def compare(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
    rtol: float = PARITY_RTOL, atol: float = PARITY_ATOL,
) -> list[dict]:
    """Per-tensor parity of a backend's parameters (candidate) against the float64 reference.

    Decision metric, per tensor: d = cand - ref, rms(a) = sqrt(mean(a**2));
    ok iff every candidate value is finite and rms(d) <= atol + rtol * rms(ref).
    rms_rel_err = rms(d) / rms(ref) is that ratio. The tensor's own magnitude is the scale because
    rounding error is set by the size of the numbers a tensor was computed from, not by each entry (an
    elementwise ratio is unbounded for an entry that crosses zero during training), and the RMS rather
    than the max because float32 Adam legitimately misplaces a few isolated near-zero-gradient entries
    by O(lr) (see PARITY_RTOL; measurements in docs/correctness.md). max_abs_err and
    max_rel_err = max|d| / max|ref| are reported to locate a failure, not to decide it.

    Returns one dict per reference tensor, in the reference's order: name, shape, max_abs_err,
    max_rel_err, rms_err, rms_rel_err, ok. A missing tensor or a shape mismatch raises ValueError:
    that is a wiring bug, not a numerical difference.
    """
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise ValueError(f"candidate lacks parameters: {', '.join(missing)}")

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else (0.0 if num == 0 else float("inf"))

    rows = []
    for name, ref in reference.items():
        ref = np.asarray(ref, dtype=np.float64)
        cand = np.asarray(candidate[name], dtype=np.float64)
        if ref.shape != cand.shape:
            raise ValueError(f"{name}: candidate shape {cand.shape}, reference shape {ref.shape}")
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
