"""Aggregate training throughput of seed ensembles: N seeds as one program against one seed at a time.

    python benchmarks/ensemble_scaling.py --device cpu --threads 2 --train-limit 10000 \\
        --out reports/ensemble-scaling-cpu

For every engine with an ensemble (torch, torch-compile, jax) and every N of --sizes, one child process
builds the ensemble engine of N seeds, compiles it (warmup, untimed), trains --epochs epochs untimed
and then --repeats timed epochs (device synchronised: train_epoch returns host numbers), and reports
the median epoch: aggregate samples/s = N x n / median seconds. The baseline is the single-seed engine
measured the same way in its own child: N seeds run one after another train at its rate in aggregate,
so `vs one at a time` = ensemble aggregate / single-seed rate. The permutations and noise of each epoch
are made before its timed window (--noise counter: generated on the device inside it, as an ensemble on
a GPU does). A point whose memory estimate does not fit (harness/execution/ensemble_memory.py) is
recorded as skipped, as is every larger N of an engine once one point took longer than
--max-point-seconds. Writes DIR/scaling.json, DIR/scaling.md and DIR/scaling.png.
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

ENGINES = ("torch", "torch-compile", "jax")


def point(engine: str, members: int, arrangement: str, args) -> dict:
    """One measurement, in this (child) process: members = 0 means the single-seed engine; `arrangement`
    is the ensemble's engine option `members` (vmap, sequential or auto)."""
    import numpy as np

    import backends
    from backends.base import pass_noise
    from harness import data
    from harness.config import RunConfig
    from harness.draws import epoch_permutation, init_params
    config = RunConfig(backends=(engine,), device=args.device, threads=args.threads, noise=args.noise,
                       train_limit=args.train_limit, test_limit=256,
                       engine_options={engine: {"members": arrangement}} if members else {})
    mnist = data.load(None)
    train_x, test_x = mnist.train_x[:args.train_limit], mnist.test_x[:256]
    n, latent, seeds = len(train_x), config.model.latent_dim, list(range(1, max(members, 1) + 1))
    if members:
        from harness.execution import ensemble_memory
        ensemble_memory.check_fits(config.model, members, n, len(test_x), ensemble_memory.host_available_bytes(),
                                   "this host's free memory")
        engine_ = backends.create_ensemble(engine)
        engine_.setup([init_params(s, config.model) for s in seeds], train_x, test_x, config)
    else:
        engine_ = backends.create(engine)
        engine_.setup(init_params(1, config.model), train_x, test_x, config)
    t = time.perf_counter()
    engine_.warmup()
    engine_.synchronize()
    compile_seconds = time.perf_counter() - t
    seconds = []
    for epoch in range(1, args.epochs + args.repeats + 1):
        perms = np.stack([epoch_permutation(s, epoch, n) for s in seeds])
        noises = [pass_noise(config.noise, s, epoch, n, latent) for s in seeds]
        t = time.perf_counter()
        if members:
            engine_.train_epoch(perms, noises)
        else:
            engine_.train_epoch(perms[0], noises[0])
        if epoch > args.epochs:
            seconds.append(time.perf_counter() - t)
    median = statistics.median(seconds)
    return {"engine": engine, "members": members, "arrangement": arrangement if members else "single",
            "n": n, "compile_seconds": compile_seconds,
            "epoch_seconds": seconds, "median_seconds": median,
            "aggregate_samples_per_second": max(members, 1) * n / median,
            "describe": getattr(engine_, "describe", dict)()}


def run_point(engine: str, members: int, arrangement: str, args) -> dict:
    """A point in its own child process (fresh threads and memory), pinned as harness workers are."""
    from harness.execution.child_env import framework_env
    cmd = [sys.executable, __file__, "--point", engine, str(members), arrangement, *sys.argv[1:]]
    env = {**framework_env(), "OMP_NUM_THREADS": str(args.threads)}
    cores = sorted(os.sched_getaffinity(0))[:args.threads]  # XLA sizes its pool by the affinity, torch obeys it too
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=lambda: os.sched_setaffinity(0, cores))
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        return {"engine": engine, "members": members, "arrangement": arrangement, "skipped": last[0],
                "wall_seconds": wall}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_seconds": wall}


def table(points: list[dict]) -> str:
    """Markdown: per engine and N, aggregate samples/s and the ratio to one seed at a time."""
    lines = ["| engine | N | members | aggregate train samples/s | per seed | vs one at a time | median epoch s (min-max, repeats) | compile s |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for p in points:
        base = next((q for q in points if q["engine"] == p["engine"] and q["members"] == 0 and "skipped" not in q), None)
        label = "single-seed engine" if p["members"] == 0 else str(p["members"])
        how = p.get("arrangement", "")
        if "skipped" in p:
            lines.append(f"| {p['engine']} | {label} | {how} | skipped: {p['skipped']} | | | | |")
            continue
        ratio = f"{p['aggregate_samples_per_second'] / base['aggregate_samples_per_second']:.2f}x" if base else "-"
        spread = f"{p['median_seconds']:.3f} ({min(p['epoch_seconds']):.3f}-{max(p['epoch_seconds']):.3f}, {len(p['epoch_seconds'])})"
        lines.append(f"| {p['engine']} | {label} | {how} | {p['aggregate_samples_per_second']:,.0f} | "
                     f"{p['aggregate_samples_per_second'] / max(p['members'], 1):,.0f} | {ratio} | {spread} | "
                     f"{p['compile_seconds']:.1f} |")
    return "\n".join(lines)


def figure(points: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for engine in dict.fromkeys(p["engine"] for p in points):
        line = None
        for how in dict.fromkeys(p.get("arrangement") for p in points if p["engine"] == engine and p["members"]):
            mine = [p for p in points if p["engine"] == engine and p["members"] and p.get("arrangement") == how
                    and "skipped" not in p]
            if mine:
                line, = ax.plot([p["members"] for p in mine], [p["aggregate_samples_per_second"] for p in mine],
                                "o-" if how != "vmap" else "s--", color=line.get_color() if line else None,
                                label=f"{engine} ensemble, {how}")
        if line is not None:
            base = next((p for p in points if p["engine"] == engine and p["members"] == 0 and "skipped" not in p), None)
            if base:
                ax.axhline(base["aggregate_samples_per_second"], color=line.get_color(), ls=":",
                           label=f"{engine}, one seed at a time")
    ax.set(xscale="log", xlabel="seeds in the ensemble (N)", ylabel="aggregate train samples/s", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--point", nargs=3, metavar=("ENGINE", "N", "MEMBERS"), help=argparse.SUPPRESS)
    ap.add_argument("--members", default="auto",
                    help="the ensembles' engine option `members`, comma-separated to measure several (auto, vmap, sequential)")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--sizes", default="1,4,16,64,256")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--noise", default="harness", choices=("harness", "counter"))
    ap.add_argument("--train-limit", type=int, default=60_000)
    ap.add_argument("--epochs", type=int, default=1, help="untimed epochs after compiling")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs (the median is reported)")
    ap.add_argument("--max-point-seconds", type=float, default=600.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.point:
        print(json.dumps(point(args.point[0], int(args.point[1]), args.point[2], args)))
        return 0
    from harness import atomic
    from harness.measurement import measure
    points = []
    for engine in args.engines.split(","):
        points.append(run_point(engine, 0, "single", args))
        print(json.dumps({k: v for k, v in points[-1].items() if k != "describe"}), flush=True)
        for how in args.members.split(","):
            over = False
            for members in map(int, args.sizes.split(",")):
                p = ({"engine": engine, "members": members, "arrangement": how,
                      "skipped": "a smaller N took over --max-point-seconds"} if over else run_point(engine, members, how, args))
                over = over or p.get("wall_seconds", 0.0) > args.max_point_seconds
                points.append(p)
                print(json.dumps({k: v for k, v in p.items() if k != "describe"}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    env = measure.environment()
    atomic.write_json(args.out / "scaling.json", {"command": " ".join(["python", *sys.argv]), "environment": env,
                                                  "settings": {k: v for k, v in vars(args).items() if k not in ("out", "point")},
                                                  "points": points})
    cpu = env.get("cpu", "")
    title = f"{args.device} {cpu}, {args.threads} thread(s), {args.train_limit} samples/epoch"
    figure(points, args.out / "scaling.png", title[:90])
    atomic.write_text(args.out / "scaling.md", f"# Seed-ensemble scaling: {title}\n\nCommand: `python {' '.join(sys.argv)}`\n\n"
                      + table(points) + "\n\n![scaling](scaling.png)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
