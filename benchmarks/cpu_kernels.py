"""Where a CPU training step goes besides the floor, kernel by kernel (issue 18's profile).

    python benchmarks/cpu_kernels.py [--threads N] [--out FILE.json]

Per mlp-vae training step (batch 128), each figure the best and the median of 7 rounds of 200 calls:
- products: the step's 14 matrix products (workloads.mlp_vae.train_products) in torch, which is the
  probe's floor (oneDNN/MKL), and in XLA as one jitted program, float32 and bf16; XLA once per flag
  set of XLA_VARIANTS (its library paths for dots);
- Adam: torch's fused Adam and a jitted optax.adam with donated state, over the model's parameters;
- memory: copy bandwidth of one Adam working set (parameters, gradients, two moments).
Each part runs in its own child process pinned to the same cores (XLA reads its flags once per process,
and the two frameworks' thread pools must not meet). --out writes FILE.json and FILE.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import atomic  # noqa: E402
from harness.config import ModelConfig  # noqa: E402
from harness.measurement import measure  # noqa: E402
from workloads.mlp_vae import param_shapes, train_products  # noqa: E402

XLA_VARIANTS = {  # label: XLA_FLAGS
    "XLA default": "",
    "XLA oneDNN dot fusion": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "XLA XNNPACK dot fusion": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "XLA YNNPACK dot fusion": "--xla_cpu_experimental_ynn_fusion_type=dot",
}
BATCH, ROUNDS, CALLS = 128, 7, 200


def timed(fn, sync=lambda out: out) -> dict[str, float]:
    """ms per call of `fn`: best and median of ROUNDS rounds of CALLS calls, after a warm-up."""
    for _ in range(20):
        sync(fn())
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(CALLS):
            out = fn()
        sync(out)
        rounds.append((time.perf_counter() - start) / CALLS * 1e3)
    return {"best_ms": min(rounds), "median_ms": statistics.median(rounds)}


def torch_part() -> dict[str, dict]:
    import torch
    products = train_products(ModelConfig(), BATCH)
    out = {}
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        ops = [(torch.randn(r, k, dtype=dtype), torch.randn(k, c, dtype=dtype), torch.empty(r, c, dtype=dtype))
               for r, k, c in products]
        def step(ops=ops):
            for a, b, c in ops:
                torch.mm(a, b, out=c)
        out[f"products torch {name}"] = timed(step)
    params = [torch.nn.Parameter(torch.randn(*s)) for s in param_shapes(ModelConfig()).values()]
    for p in params:
        p.grad = torch.randn_like(p)
    adam = torch.optim.Adam(params, 1e-3, fused=True)
    out["Adam torch fused"] = timed(adam.step)
    return out


def jax_part() -> dict[str, dict]:
    import jax
    import jax.numpy as jnp
    import optax
    key = jax.random.PRNGKey(0)
    out = {}
    for name, dtype in (("float32", jnp.float32), ("bf16", jnp.bfloat16)):
        ops = [(jax.random.normal(key, (r, k)).astype(dtype), jax.random.normal(key, (k, c)).astype(dtype))
               for r, k, c in train_products(ModelConfig(), BATCH)]
        step = jax.jit(lambda ops: [a @ b for a, b in ops])
        out[f"products {name}"] = timed(lambda: step(ops), jax.block_until_ready)
    params = {n: jax.random.normal(key, s) for n, s in param_shapes(ModelConfig()).items()}
    grads = jax.tree.map(jnp.ones_like, params)
    adam = optax.adam(1e-3)
    update = jax.jit(lambda p, s: (lambda u, s: (optax.apply_updates(p, u), s))(*adam.update(grads, s, p)),
                     donate_argnums=(0, 1))
    state = [params, adam.init(params)]
    def adam_step():
        state[0], state[1] = update(*state)
        return state[0]
    out["Adam optax"] = timed(adam_step, jax.block_until_ready)
    return out


def memory_part() -> dict[str, dict]:
    import numpy as np
    n = 4 * sum(int(np.prod(s)) for s in param_shapes(ModelConfig()).values())  # params, grads, 2 moments
    src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
    t = timed(lambda: np.copyto(dst, src))
    return {"copy of one Adam working set": {**t, "GB/s": 2 * 4 * n / (t["best_ms"] / 1e3) / 1e9, "MB": 4 * n / 1e6}}


def child(part: str, threads: int, xla_flags: str = "") -> dict:
    """Run `part` in a fresh interpreter pinned to the first `threads` cores; its figures."""
    env = {**os.environ, "XLA_FLAGS": xla_flags}
    proc = subprocess.run([sys.executable, __file__, "--part", part, "--threads", str(threads)],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict, threads: int) -> str:
    lines = [f"# Kernel paths of one mlp-vae training step on the CPU ({threads} threads, ms per step)", "",
             "Best and median of 7 rounds of 200 calls. products: the step's 14 matrix products "
             "(torch = the probe's floor); Adam: one update of all parameters.", "",
             "| kernel path | best ms | median ms |", "|---|---:|---:|"]
    for label, t in results["figures"].items():
        lines.append(f"| {label} | {t['best_ms']:.3f} | {t['median_ms']:.3f} |")
    mem = results["figures"]["copy of one Adam working set"]
    lines += ["", f"Copy bandwidth at Adam's working set ({mem['MB']:.1f} MB): {mem['GB/s']:.1f} GB/s.", "",
              f"Command: `{results['command']}`", "", f"Environment: {json.dumps(results['environment'])}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--part", choices=("torch", "jax", "memory"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:  # a child: pin first, so the frameworks size their thread pools to these cores
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
        if args.part == "torch":
            import torch
            torch.set_num_threads(args.threads)
        print(json.dumps({"torch": torch_part, "jax": jax_part, "memory": memory_part}[args.part]()))
        return
    figures = child("torch", args.threads)
    for label, flags in XLA_VARIANTS.items():
        for key, t in child("jax", args.threads, flags).items():
            name = f"{key.replace('products ', 'products ' + label + ' ')}" if key.startswith("products") else key
            if key.startswith("products") or label == "XLA default":
                figures[name] = t
    figures.update(child("memory", args.threads))
    results = {"threads": args.threads, "xla_variants": XLA_VARIANTS, "figures": figures,
               "command": "python " + " ".join(sys.argv), "environment": measure.environment()}
    print(table(results, args.threads))
    if args.out:
        atomic.write_text(args.out, json.dumps(results, indent=2) + "\n")
        atomic.write_text(args.out.with_suffix(".md"), table(results, args.threads))


if __name__ == "__main__":
    main()
