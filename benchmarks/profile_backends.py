"""Where the time of a training epoch goes, per backend (the breakdown in docs/performance.md).

    python benchmarks/profile_backends.py [torch torch-compile jax] [--threads N] [--out FILE.json]

--out writes FILE.json (every figure, the command and the environment) and FILE.md (the table), so
the breakdown quoted in docs/performance.md is a committed artifact; run it on a quiet machine.

torch backends: torch.profiler over 100 steady-state steps, self CPU time grouped into matrix
products, optimizer, indexing, elementwise/other; jax: the same epoch timed with and without the Adam
update (XLA fuses everything into one program, so its profile is the difference of two programs).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from backends.base import pass_noise  # noqa: E402
from harness import atomic, data  # noqa: E402
from harness.config import RunConfig  # noqa: E402
from harness.draws import epoch_permutation, init_params  # noqa: E402
from harness.measurement import measure

GROUPS = {"mm": "matrix products", "addmm": "matrix products", "bmm": "matrix products",
          "adam": "optimizer", "_fused_adam": "optimizer", "index_select": "data indexing",
          "randn": "noise", "normal": "noise"}


def torch_breakdown(name: str, threads: int, mnist) -> dict[str, float]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    import backends
    torch.set_num_threads(threads)
    b = backends.create(name)
    n = 128 * 100
    b.setup(init_params(1), mnist.train_x[:n], mnist.test_x, RunConfig(threads=threads, train_limit=n))
    b.warmup()
    b.train_epoch(epoch_permutation(1, 1, n), pass_noise("harness", 1, 1, n, 20))
    t = time.perf_counter()
    b.train_epoch(epoch_permutation(1, 2, n), pass_noise("harness", 1, 2, n, 20))
    wall = time.perf_counter() - t
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        b.train_epoch(epoch_permutation(1, 3, n), pass_noise("harness", 1, 3, n, 20))
    groups: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        key = ev.key.split("::")[-1].lower()
        group = next((g for k, g in GROUPS.items() if k in key), None)
        if group is None and ("compiled" in key or "cpp_fused" in key or "inductor" in key):
            group = "compiled kernels"
        groups[group or "elementwise and other ops"] += ev.self_cpu_time_total / 1e6
    total = sum(groups.values())
    out = {g: v / total * wall / 100 * 1e3 for g, v in groups.items()}  # ms per step, scaled to wall
    out["wall ms/step"] = wall / 100 * 1e3
    return out


def jax_breakdown(threads: int, mnist) -> dict[str, float]:
    import optax

    import backends.jax.engine as jf
    n = 128 * 100
    res = {}
    for label, make in (("with adam", jf.make_adam), ("sgd instead of adam", lambda m: optax.sgd(m.learning_rate))):
        jf.make_adam = make
        jf.programs.cache_clear()
        b = jf.JaxBackend()
        b.setup(init_params(1), mnist.train_x[:n], mnist.test_x, RunConfig(threads=threads, train_limit=n))
        b.warmup()
        b.train_epoch(epoch_permutation(1, 1, n), pass_noise("harness", 1, 1, n, 20))
        best = min(_time(lambda e=e: b.train_epoch(epoch_permutation(1, e, n), pass_noise("harness", 1, e, n, 20))) for e in range(2, 6))
        res[label] = best / 100 * 1e3
    return {"wall ms/step": res["with adam"], "optimizer (difference)": res["with adam"] - res["sgd instead of adam"]}


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def markdown(doc: dict[str, Any]) -> str:
    """One row per backend, ms per step; groups a backend's profile has no entry for are '-'."""
    rows = doc["results"]
    groups = sorted({g for r in rows.values() for g in r} - {"wall ms/step"})
    env = doc["environment"]
    lines = [f"# Where a training step goes ({doc['threads']} threads, ms per step)", "",
             f"Command: `{doc['command']}`", "",
             "torch backends: torch.profiler self CPU time over 100 steady steps, grouped, scaled to the "
             "epoch's wall time; jax: the epoch timed with Adam and with plain SGD (XLA fuses the step into "
             "one program), the optimizer being the difference.", "",
             "| backend | wall ms/step | " + " | ".join(groups) + " |", "|---|" + "---:|" * (len(groups) + 1)]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['wall ms/step']:.2f} | "
                     + " | ".join(f"{r[g]:.2f}" if g in r else "-" for g in groups) + " |")
    lines += ["", f"Environment: {env['cpu']} ({env['cores']} cores; {' '.join(env['cpu_flags'])}); "
              + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
              + f"; git {env['git']['commit']}{' (dirty)' if env['git']['dirty'] else ''}; {doc['created']}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("backends", nargs="*", default=["torch", "torch-compile", "jax"])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                   help="also write FILE.json and FILE.md (the table) for docs/performance.md")
    args = p.parse_args()
    if args.out is not None:
        atomic.ensure_writable_dir(args.out.parent, "--out folder")
    mnist = data.load()
    results = {}
    for name in args.backends:
        result = jax_breakdown(args.threads, mnist) if name == "jax" else torch_breakdown(name, args.threads, mnist)
        results[name] = result
        print(name, {k: round(v, 2) for k, v in sorted(result.items(), key=lambda kv: -kv[1])})
    if args.out is not None:
        doc = {"command": "python benchmarks/profile_backends.py " + " ".join(sys.argv[1:]),
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threads": args.threads, "unit": "ms per step",
               "environment": measure.environment(), "results": results}
        atomic.write_json(args.out, doc)
        atomic.write_text(args.out.with_suffix(".md"), markdown(doc))
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
