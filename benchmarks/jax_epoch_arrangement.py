"""Scan or loop? Seconds per training batch of the jax engine's two epoch arrangements, per workload.

    python benchmarks/jax_epoch_arrangement.py --batches 3 --repeats 3 --threads 1 --out reports/jax-epoch-cpu

For each workload, trains the same `batches` full batches of real MNIST with the engine option
`epoch` set to "scan" (one lax.scan program per epoch) and to "loop" (a jitted step per batch),
each `repeats` times after an untimed warm-up epoch, and writes the median, min and max
seconds per batch of each to OUT/results.json with the machine it ran on. The reason this exists:
XLA:CPU runs convolutions inside a scan's loop body far slower than in a program of their own, which
is why the engine's `auto` loops for a convolutional workload on the CPU (backends/jax/engine.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import atomic, data  # noqa: E402
from harness.config import ModelConfig, RunConfig  # noqa: E402
from harness.draws import epoch_noise, epoch_permutation, init_params  # noqa: E402
from harness.measurement import measure  # noqa: E402


def seconds_per_batch(workload: str, epoch: str, x, repeats: int, threads: int) -> list[float]:
    """Timed epochs (after one untimed warm-up epoch) of `len(x) // 128` batches, per batch."""
    import backends
    from backends.base import Noise
    m = ModelConfig(workload=workload)
    b = backends.create("jax")
    config = RunConfig(model=m, threads=threads, train_limit=len(x), engine_options={"jax": {"epoch": epoch}})
    b.setup(init_params(1, m), x, x[:128], config)
    b.warmup()
    n, out = len(x), []
    for e in range(repeats + 1):
        perm, noise = epoch_permutation(1, e + 1, n), Noise(0, epoch_noise(1, e + 1, n, m.latent_dim))
        t = time.perf_counter()
        b.train_epoch(perm, noise)
        if e:
            out.append((time.perf_counter() - t) / (n // m.batch_size))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    x = data.load().train_x[: 128 * args.batches]
    rows = []
    for workload in ("mlp-vae", "conv-vae"):
        for epoch in ("scan", "loop"):
            secs = seconds_per_batch(workload, epoch, x, args.repeats, args.threads)
            rows.append({"workload": workload, "epoch": epoch, "median_s_per_batch": statistics.median(secs),
                         "min": min(secs), "max": max(secs), "per_repeat": secs})
            print(f"{workload} {epoch}: {statistics.median(secs):.4f} s/batch ({min(secs):.4f}-{max(secs):.4f})")
    atomic.write_json(args.out / "results.json", {
        "kind": "jax epoch arrangement, seconds per training batch", "command": " ".join(sys.argv),
        "batches": args.batches, "repeats": args.repeats, "threads": args.threads,
        "environment": measure.environment(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
