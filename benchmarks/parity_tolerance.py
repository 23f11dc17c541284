"""How far a correct float32 backend drifts from the float64 reference, and how far real bugs move it.

    python benchmarks/parity_tolerance.py [--seeds 1-40] [--backend torch] --out reports/parity-tolerance

The study behind PARITY_RTOL (harness/verification/oracle.py) and behind teacher forcing (harness/verification/parity.py),
made reproducible: docs/correctness.md quotes its output, so no tolerance rests on an unrecorded run.

Part 1, rounding: for every seed, the backend and harness.verification.oracle each run N free (not teacher-forced)
Adam steps from init_params(seed) on the batches and noise of parity.lockstep_inputs; at N = 10, 20 and
50 it records the worst tensor's rms_rel_err (oracle.compare, the decision metric) and max|d|/max|ref|
(for contrast), and each step's loss relative error.
Part 2, bugs: float64 variants of the reference step with one formula changed, on the first seed,
judged against the correct float64 run by the same metric. Float64 on both sides, so the figure is the
bug's own size, with no rounding mixed in.
Runs on one core (BLAS and the backend pinned to 1 thread); a few minutes. Not a timing.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import backends  # noqa: E402
from harness import atomic, data  # noqa: E402
from harness.config import ModelConfig, RunConfig, parse_seeds  # noqa: E402
from harness.draws import init_params  # noqa: E402
from harness.measurement import measure
from harness.verification import oracle, parity
from workloads.mlp_vae import oracle as mlp_oracle

CHECKPOINTS = (10, 20, 50)


def worst(ref: dict, cand: dict) -> dict[str, float]:
    rows = oracle.compare(ref, cand)
    return {"rms_rel_err": max(r["rms_rel_err"] for r in rows), "max_rel_err": max(r["max_rel_err"] for r in rows)}


def tf32(a: np.ndarray) -> np.ndarray:
    """Round to TF32's 10-bit mantissa (via float32), as a GPU matmul with TF32 enabled sees its inputs."""
    bits = np.asarray(a, np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)


def adam(p, g, s: oracle.AdamState, m: ModelConfig, eps_inside=False, bias_correction=True):
    """oracle.adam_update, optionally with one of two common Adam mistakes."""
    if not (eps_inside or not bias_correction):
        return oracle.adam_update(p, g, s, m)
    t = s.step + 1
    new_p, new_m, new_v = {}, {}, {}
    for k in p:
        new_m[k] = m.beta1 * s.m[k] + (1 - m.beta1) * g[k]
        new_v[k] = m.beta2 * s.v[k] + (1 - m.beta2) * g[k] ** 2
        mh, vh = (new_m[k] / (1 - m.beta1**t), new_v[k] / (1 - m.beta2**t)) if bias_correction else (new_m[k], new_v[k])
        denom = np.sqrt(vh + m.adam_eps) if eps_inside else np.sqrt(vh) + m.adam_eps
        new_p[k] = p[k] - m.learning_rate * mh / denom
    return new_p, oracle.AdamState(t, new_m, new_v)


def _mean(p, x, e):
    loss, g = mlp_oracle.loss_and_grad(p, x, e)
    return loss / len(x), {k: v / len(x) for k, v in g.items()}


def _tf32(p, x, e):
    return mlp_oracle.loss_and_grad({k: tf32(v) for k, v in p.items()}, tf32(x), e)


CORRECT = (mlp_oracle.loss_and_grad, {})
BUGS = {  # name -> (loss and gradient of (params, x, eps), options of adam())
    "Adam eps inside the sqrt": (mlp_oracle.loss_and_grad, {"eps_inside": True}),
    "no Adam bias correction": (mlp_oracle.loss_and_grad, {"bias_correction": False}),
    "mean instead of sum loss": (_mean, {}),
    "z = mu in training": (lambda p, x, e: mlp_oracle.loss_and_grad(p, x, None), {}),
    "noise rows shifted by one": (lambda p, x, e: mlp_oracle.loss_and_grad(p, x, np.roll(e, 1, 0)), {}),
    "TF32-like rounding of weights and inputs": (_tf32, {}),
}


def float64_run(variant, params, batches, noise, m) -> tuple[dict[int, dict], list[float]]:
    """Params at each checkpoint and each step's loss (before the update), of a float64 variant."""
    grad_fn, options = variant
    p, s = oracle.as_float64(params), oracle.adam_init(params)
    at, losses = {}, []
    for i, (x, e) in enumerate(zip(batches, noise), 1):
        loss, g = grad_fn(p, x, e)
        losses.append(loss)
        p, s = adam(p, g, s, m, **options)
        if i in CHECKPOINTS:
            at[i] = p
    return at, losses


def rounding(backend, seed: int, train_x, m: ModelConfig) -> dict:
    params = init_params(seed, m)
    batches, noise = parity.lockstep_inputs(train_x, max(CHECKPOINTS), seed, m.batch_size, m.latent_dim)
    ref_at, ref_losses = float64_run(CORRECT, params, batches, noise, m)
    backend.set_state(parity.to_state32(oracle.as_float64(params), oracle.adam_init(params)))
    out: dict = {"seed": seed, "loss_rel_err": []}
    for i, (x, e) in enumerate(zip(batches, noise), 1):
        out["loss_rel_err"].append(abs(backend.lockstep_step(x, e) - ref_losses[i - 1]) / abs(ref_losses[i - 1]))
        if i in CHECKPOINTS:
            out[str(i)] = worst(ref_at[i], backend.get_state())
    return out


def markdown(doc: dict) -> str:
    runs, n = doc["rounding"], len(doc["rounding"])
    lines = [f"# Parity tolerance study: {doc['backend']} float32 vs the float64 reference, free-running", "",
             f"Command: `{doc['command']}`", "",
             "Part 1, rounding: worst tensor per run; rms_rel_err decides (oracle.compare), "
             "max_rel_err = max|d| / max|ref| for contrast.", "",
             f"| steps | runs with rms_rel_err <= PARITY_RTOL ({doc['PARITY_RTOL']:g}) | median rms_rel_err | "
             "largest rms_rel_err within PARITY_RTOL | runs beyond it: seed (rms_rel_err) | largest max_rel_err |",
             "|---:|---:|---:|---:|---|---:|"]
    rtol = doc["PARITY_RTOL"]
    for c in map(str, CHECKPOINTS):
        rms = np.array([r[c]["rms_rel_err"] for r in runs])
        beyond = ", ".join(f"{r['seed']} ({r[c]['rms_rel_err']:.1e})" for r in runs if r[c]["rms_rel_err"] > rtol)
        lines.append(f"| {c} | {int((rms <= rtol).sum())} of {n} | {np.median(rms):.1e} | "
                     f"{rms[rms <= rtol].max():.1e} | {beyond or '-'} | {max(r[c]['max_rel_err'] for r in runs):.1e} |")
    calm = [r for r in runs if r[str(CHECKPOINTS[-1])]["rms_rel_err"] <= rtol]
    for k in (20, 50):
        lines.append(f"\nPer-step loss relative error, steps 1-{k}: at most "
                     f"{max(max(r['loss_rel_err'][:k]) for r in runs):.1e} over all runs, "
                     f"{max(max(r['loss_rel_err'][:k]) for r in calm):.1e} over the {len(calm)} runs still within "
                     f"PARITY_RTOL after {CHECKPOINTS[-1]} steps.")
    lines += ["", f"Part 2, bugs (float64, seed {doc['bug_seed']}): worst tensor's rms_rel_err against the "
              "correct float64 run.", "", "| bug | " + " | ".join(f"{c} steps" for c in CHECKPOINTS) + " |",
              "|---|" + "---:|" * len(CHECKPOINTS)]
    for name, row in doc["bugs"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[str(c)]['rms_rel_err']:.1e}" for c in CHECKPOINTS) + " |")
    env = doc["environment"]
    lines += ["", f"Environment: {env['cpu']}; " + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
              + f"; git {env['git']['commit']}{' (dirty)' if env['git']['dirty'] else ''}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="1-40")
    p.add_argument("--backend", default="torch")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    args = p.parse_args()
    atomic.ensure_writable_dir(args.out, "--out folder")
    m, train_x = ModelConfig(), data.load().train_x
    seeds = parse_seeds(args.seeds)
    backend = backends.create(args.backend)
    batches, _ = parity.lockstep_inputs(train_x, 2, seeds[0], m.batch_size, m.latent_dim)
    backend.setup(init_params(seeds[0], m), np.concatenate(batches), batches[0],
                  RunConfig(backends=(args.backend,), threads=1))
    runs = []
    for seed in seeds:
        runs.append(rounding(backend, seed, train_x, m))
        print(f"seed {seed}: " + ", ".join(f"{c} steps {runs[-1][str(c)]['rms_rel_err']:.1e}" for c in CHECKPOINTS), flush=True)
    params = init_params(seeds[0], m)
    batches, noise = parity.lockstep_inputs(train_x, max(CHECKPOINTS), seeds[0], m.batch_size, m.latent_dim)
    good, _ = float64_run(CORRECT, params, batches, noise, m)
    bugs = {}
    for name, variant in BUGS.items():
        at, _ = float64_run(variant, params, batches, noise, m)
        bugs[name] = {str(c): worst(good[c], at[c]) for c in CHECKPOINTS}
        print(f"{name}: " + ", ".join(f"{bugs[name][str(c)]['rms_rel_err']:.1e}" for c in CHECKPOINTS), flush=True)
    doc = {"command": "python benchmarks/parity_tolerance.py " + " ".join(sys.argv[1:]), "backend": args.backend,
           "PARITY_RTOL": oracle.PARITY_RTOL, "checkpoints": list(CHECKPOINTS), "seeds": seeds,
           "bug_seed": seeds[0], "environment": measure.environment(), "rounding": runs, "bugs": bugs}
    atomic.write_json(args.out / "tolerance.json", doc)
    atomic.write_text(args.out / "tolerance.md", markdown(doc))
    print(f"wrote {args.out / 'tolerance.json'} and {args.out / 'tolerance.md'}")


if __name__ == "__main__":
    main()
