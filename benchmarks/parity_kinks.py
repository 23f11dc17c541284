"""How often a correct float32 backend has a kink step in teacher-forced lockstep parity, over seeds.

    python benchmarks/parity_kinks.py --seeds 1-30 --backends torch,jax --steps 50 --out reports/parity-kinks

A kink: a ReLU input within float32 rounding of zero takes the other branch than in float64. In the
decoder it changes one sample's whole backward pass, so every encoder weight that sample's active
pixels and active hidden units touch moves (hundreds of entries of fc1.weight in one step), where an
encoder kink moves a handful. harness/verification/parity.py's KINK_BUDGET was set from seed 1
alone; this study counts, per seed and step, the entries beyond STEP_RTOL for correct backends, the
data behind the rule that judges them (docs/correctness.md). Runs on one core; not a timing.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import atomic, data  # noqa: E402
from harness.config import RunConfig, parse_seeds  # noqa: E402
from harness.draws import init_params, lockstep_inputs  # noqa: E402
from harness.measurement import measure  # noqa: E402
from harness.verification import parity  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1-30")
    ap.add_argument("--backends", default="torch,jax")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    config = RunConfig(threads=1)
    m = config.model
    train_x = data.load(None).train_x
    rows = []
    for seed in parse_seeds(args.seeds):
        batches, noise = lockstep_inputs(train_x, args.steps, seed, m.batch_size, m.latent_dim)
        chain = parity.oracle_chain(init_params(seed, m), batches, noise, m)
        for name in args.backends.split(","):
            report = parity.run_backend(name, chain, config, free_running=False)
            rows.append({"seed": seed, "backend": name, "outliers_per_step": report.outliers,
                         "max_loss_rel_err": report.max_loss_rel_err})
            print(seed, name, max(report.outliers), sum(o > parity.KINK_BUDGET for o in report.outliers), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(args.out / "kinks.json", {"command": " ".join(sys.argv), "steps": args.steps,
                                                "step_rtol": parity.STEP_RTOL, "kink_budget": parity.KINK_BUDGET,
                                                "environment": measure.environment(), "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
