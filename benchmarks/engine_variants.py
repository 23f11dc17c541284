"""Does an engine setting make the MLP's full epoch faster here? Variants timed by `harness run`, interleaved.

    python benchmarks/engine_variants.py --rounds 2 --repeats 3 --out reports/cpu-intel-variants

Each variant is one backend with extra `harness run` flags and environment (VARIANTS). Every round
runs every variant once, in turn, so a machine that slows down mid-study slows all of them alike; each
run trains one full epoch, then times `--repeats` more on a copy of the state (`run --repeats`), and the
variant's figure is the median of all its timed epochs with their min and max. Losses are shown too:
a variant that keeps the arithmetic has the baseline's loss (bf16 variants change it, by design). Timed
in turn on one machine, float32 and bf16 variants give the bf16 speed-up on a machine whose speed drifts. Writes OUT/<variant>/round-<r>/results.json
(the runs) and OUT/summary.json and OUT/summary.md (the table).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import atomic  # noqa: E402
from harness.measurement import measure, results  # noqa: E402

# label: (backend, extra `harness run` flags, extra environment); the first of each backend is its default
VARIANTS: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "torch": ("torch", [], {}),
    "torch-compile": ("torch-compile", [], {}),
    # MKL's reproducible mode (harness/execution/child_env.py): off, and the strict variant
    "torch-mkl-cnr-off": ("torch", [], {"MKL_CBWR": ""}),
    "torch-mkl-cnr-auto": ("torch", [], {"MKL_CBWR": "AUTO"}),
    "torch-mkl-cnr-strict": ("torch", [], {"MKL_CBWR": "AUTO,STRICT"}),
    "torch-compile-mkl-cnr-off": ("torch-compile", [], {"MKL_CBWR": ""}),
    "torch-compile-mkl-cnr-auto": ("torch-compile", [], {"MKL_CBWR": "AUTO"}),
    "torch-compile-mkl-cnr-strict": ("torch-compile", [], {"MKL_CBWR": "AUTO,STRICT"}),
    "torch-compile-cpp-wrapper": ("torch-compile", [], {"TORCHINDUCTOR_CPP_WRAPPER": "1"}),
    "torch-compile-max-autotune": ("torch-compile", ["--compile-mode", "max-autotune"], {}),
    "jax-scan": ("jax", ["--engine-option", "jax.epoch=scan"], {}),
    "jax-loop": ("jax", ["--engine-option", "jax.epoch=loop"], {}),
    "jax-scan-xnnpack-dots": ("jax", ["--engine-option", "jax.epoch=scan"],
                              {"XLA_FLAGS": "--xla_cpu_experimental_xnn_fusion_type=dot"}),
    "jax-loop-xnnpack-dots": ("jax", ["--engine-option", "jax.epoch=loop"],
                              {"XLA_FLAGS": "--xla_cpu_experimental_xnn_fusion_type=dot"}),
    "torch-bf16": ("torch", ["--precision", "bf16"], {}),
    "torch-compile-bf16": ("torch-compile", ["--precision", "bf16"], {}),
    "jax-scan-bf16": ("jax", ["--engine-option", "jax.epoch=scan", "--precision", "bf16"], {}),
}


def run_variant(label: str, out: Path, repeats: int, threads: int) -> dict:
    """One `harness run` of the variant; its timed epochs (s) and primary metric."""
    backend, flags, env = VARIANTS[label]
    cmd = [sys.executable, "-m", "harness", "run", "--backends", backend, "--epochs", "1", "--repeats",
           str(repeats), "--threads", str(threads), "--no-probe", "--no-report", "--force", "--out", str(out), *flags]
    subprocess.run(cmd, env={**os.environ, **env}, check=True, capture_output=True)
    r = results.load(out).results[0]
    return {"seconds": [r.epochs[0].train_seconds, *r.repeat_seconds], "primary": r.epochs[0].primary}


def summary_md(summary: dict) -> str:
    lines = ["# Engine variants, one full mlp-vae epoch each (s/epoch, interleaved rounds)", "",
             f"Command: `{summary['command']}`", "",
             "| variant | backend, flags, environment | median s/epoch | min | max | timed epochs | test_loss after epoch 1 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for label, v in summary["variants"].items():
        s = v["seconds"]
        backend, flags, env = VARIANTS[label]
        setting = " ".join([backend, *flags, *(f"{k}={v}" for k, v in env.items())])
        lines.append(f"| {label} | `{setting}` | {statistics.median(s):.3f} | {min(s):.3f} | {max(s):.3f} | {len(s)} | "
                     f"{v['primary']:.6f} |")
    lines += ["", f"Environment: {json.dumps(summary['environment'])}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated labels of VARIANTS")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    labels = args.variants.split(",")
    if unknown := [v for v in labels if v not in VARIANTS]:
        sys.exit(f"error: unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    collected = {label: {"seconds": [], "primary": None} for label in labels}
    for r in range(1, args.rounds + 1):
        for label in labels:
            folder = args.out / label / f"round-{r}"
            got = run_variant(label, folder, args.repeats, args.threads)
            collected[label]["seconds"] += got["seconds"]
            collected[label]["primary"] = got["primary"]
            print(f"round {r} {label}: {', '.join(f'{s:.3f}' for s in got['seconds'])}", flush=True)
    summary = {"command": "python " + " ".join(sys.argv), "threads": args.threads, "variants": collected,
               "environment": measure.environment()}
    atomic.write_text(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic.write_text(args.out / "summary.md", summary_md(summary))
    print(summary_md(summary))


if __name__ == "__main__":
    main()
