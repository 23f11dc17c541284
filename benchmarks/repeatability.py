"""Do identical torch runs give identical numbers, with and without MKL's reproducible mode? What does it cost?

    python benchmarks/repeatability.py --runs 40 --probes 4 --out reports/repeatability-intel

Part 1, repeatability: `--runs` rounds of small identical `harness run --backends torch` jobs (1 epoch
on 512 training and 256 test images, all cores), one in each MKL mode of MODES (the harness's
default is harness/execution/child_env.py's; `MKL_CBWR=` (empty) turns MKL's reproducible mode off), in
turn, so a machine whose behaviour changes during the study affects every mode alike. Each mode's distinct
epoch-1 results are counted: one distinct result means every run agreed bit for bit.

Part 2, cost: `--probes` rounds of the run's probe in each mode, in turn: the floor (the epoch's
matrix products alone, best of 5) and the float32 peak. The full-epoch cost is timed by
benchmarks/engine_variants.py (its torch-mkl-cnr-* and torch-compile-mkl-cnr-* variants).

Writes OUT/repeatability.json and OUT/repeatability.md.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import atomic  # noqa: E402
from harness.config import RunConfig  # noqa: E402
from harness.execution import probe as probe_child  # noqa: E402
from harness.measurement import measure, results  # noqa: E402

MODES = {"AUTO,STRICT": "MKL_CBWR=AUTO,STRICT", "AUTO": "MKL_CBWR=AUTO", "": "MKL_CBWR= (reproducible mode off)"}
SMALL_RUN = ["run", "--backends", "torch", "--epochs", "1", "--train-limit", "512", "--test-limit", "256",
             "--no-probe", "--no-report"]


def harness(args: list[str], mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], env={**os.environ, "MKL_CBWR": mode},
                          check=True, capture_output=True, text=True)


def small_run(mode: str) -> str:
    """One small torch run; its epoch-1 train loss and test metrics, exactly (float.hex)."""
    with tempfile.TemporaryDirectory() as out:
        harness([*SMALL_RUN, "--out", out], mode)
        r = results.load(out).results[0]
        assert r.backend_info["mkl_cbwr"] == (mode or "off"), r.backend_info
        e = r.epochs[0]
        return " ".join(float(x).hex() for x in (e.train_loss, *e.metrics.values()))


def probe(mode: str) -> dict:
    """The probe of `harness run` (floor and peak, all cores) in a child process under `mode`."""
    os.environ["MKL_CBWR"] = mode  # framework_env() keeps a value the user set
    try:
        return probe_child.run(RunConfig(threads=len(os.sched_getaffinity(0))))
    finally:
        del os.environ["MKL_CBWR"]


def summary_md(summary: dict) -> str:
    lines = ["# Run-to-run repeatability of torch on the CPU, with and without MKL's reproducible mode", "",
             f"Command: `{summary['command']}`", "",
             "| mode | small runs | distinct epoch-1 results (runs each) | floor s/epoch, median (min-max) | peak GFLOP/s, median |",
             "|---|---:|---|---|---:|"]
    for mode, label in MODES.items():
        m = summary["modes"][label]
        floors, peaks = m["floor_seconds"], m["peak_gflops"]
        counts = ", ".join(str(c) for c in sorted(m["distinct_results"].values(), reverse=True))
        floor = f"{statistics.median(floors):.3f} ({min(floors):.3f}-{max(floors):.3f})" if floors else "-"
        peak = f"{statistics.median(peaks):.0f}" if peaks else "-"
        lines.append(f"| {label} | {m['runs']} | {len(m['distinct_results'])} ({counts}) | {floor} | {peak} |")
    lines += ["", f"Environment: {json.dumps(summary['environment'])}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40, help="small runs per mode")
    ap.add_argument("--probes", type=int, default=4, help="probe rounds per mode")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    got = {label: {"runs": 0, "distinct_results": collections.Counter(), "floor_seconds": [], "peak_gflops": []}
           for label in MODES.values()}
    for i in range(args.runs):
        for mode, label in MODES.items():
            got[label]["distinct_results"][small_run(mode)] += 1
            got[label]["runs"] += 1
        print(f"run {i + 1}: " + "; ".join(f"{label}: {len(g['distinct_results'])} distinct"
                                           for label, g in got.items()), flush=True)
    for i in range(args.probes):
        for mode, label in MODES.items():
            p = probe(mode)
            got[label]["floor_seconds"].append(p["floor_seconds_per_epoch"])
            got[label]["peak_gflops"].append(p["peak_gflops"])
        print(f"probe round {i + 1} done", flush=True)
    summary = {"command": "python " + " ".join(sys.argv), "modes": got, "environment": measure.environment()}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "repeatability.json", json.dumps(summary, indent=2) + "\n")
    atomic.write_text(args.out / "repeatability.md", summary_md(summary))
    print(summary_md(summary))


if __name__ == "__main__":
    main()
