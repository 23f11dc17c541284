"""Why conv-vae's Flax model defines its own transposed convolution: seconds per gradient of each.

    python benchmarks/flax_conv_transpose.py --repeats 5 --threads 1 --out reports/flax-conv-transpose-cpu

Times jax.grad (w.r.t. input and kernel) of the decoder's widest transposed convolution (deconv2:
14x14x64 -> 28x28x32, 3x3, stride 2, a batch of 128) two ways: lax.conv_transpose, which is what
nnx.ConvTranspose(transpose_kernel=True) runs, and workloads/conv_vae/flax_model.conv_transpose (the
adjoint of a strided conv with its gradients written as that conv's). Checks the two agree, then writes
the median, min and max seconds of each to OUT/results.json with the machine it ran on.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    import jax
    import jax.numpy as jnp
    import numpy as np

    from harness import atomic
    from harness.measurement import measure
    from workloads.conv_vae.flax_model import DIMENSIONS, conv_transpose

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((128, 14, 14, 64), np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, 32, 64), np.float32) * 0.05)  # HWIO of the adjoint conv
    ways = {
        "lax.conv_transpose (nnx.ConvTranspose)": lambda x, k: jax.lax.conv_transpose(
            x, k, (2, 2), ((1, 2), (1, 2)), dimension_numbers=DIMENSIONS, transpose_kernel=True),
        "conv_transpose (custom VJP)": lambda x, k: conv_transpose(x, k, 2, 28),
    }
    grads, rows = {}, []
    for name, f in ways.items():
        g = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), (0, 1)))
        grads[name] = jax.block_until_ready(g(x, kernel))
        secs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            jax.block_until_ready(g(x, kernel))
            secs.append(time.perf_counter() - t)
        rows.append({"way": name, "median_s": statistics.median(secs), "min": min(secs), "max": max(secs)})
        print(f"{name}: {statistics.median(secs):.4f} s ({min(secs):.4f}-{max(secs):.4f})")
    (a_x, a_k), (b_x, b_k) = grads.values()
    agreement = {"input_grad_max_rel": float(jnp.max(jnp.abs(a_x - b_x)) / jnp.max(jnp.abs(a_x))),
                 "kernel_grad_max_rel": float(jnp.max(jnp.abs(a_k - b_k)) / jnp.max(jnp.abs(a_k)))}
    print(agreement)
    atomic.write_json(args.out / "results.json", {
        "kind": "gradient of a stride-2 transposed convolution, seconds per call", "command": " ".join(sys.argv),
        "repeats": args.repeats, "threads": args.threads, "rows": rows, "agreement": agreement,
        "environment": measure.environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
