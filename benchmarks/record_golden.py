"""Record the golden numbers of tests/test_mlp_unchanged.py: a run folder's exact MLP numbers, and the
float64 oracle's, in one compact JSON fixture.

    python benchmarks/record_golden.py RUN_DIR [--code-commit C] --out tests/golden/mlp-before-move.json
    python benchmarks/record_golden.py --oracle-only        # print the oracle section (the test calls this)

How tests/golden/mlp-before-move.json was made, both halves with the code of commit ac41dcf (before the
move): RUN_DIR=/tmp/golden-run came from `python -m harness run --backends torch-reference,torch,
torch-compile,jax --device cpu --epochs 2 --threads 1 --train-limit 2048 --test-limit 512 --no-probe
--no-report --seed 1 --out /tmp/golden-run` at ac41dcf; then

    git archive ac41dcf | tar -x -C /tmp/ac41dcf && cp benchmarks/record_golden.py /tmp/ac41dcf/benchmarks/
    cd /tmp/ac41dcf && python benchmarks/record_golden.py /tmp/golden-run --code-commit ac41dcf... --out ...

(the script runs against the checkout it sits in, and reads either layout: harness/reference.py before the
move, the workload's oracle after it).

RUN_DIR is a finished `python -m harness run` folder (results.json, schema 1 or 2, and <backend>/params.npz).
From it the fixture keeps: the run's command (without --out), its git commit, the machine and framework
versions it ran on (the results file's environment, which read /proc/cpuinfo's "model name" on the
machine that trained), and per backend per epoch the exact train_loss and test metrics as float.hex()
strings, plus the sha256 of every saved parameter array (its float32 bytes, C order).

The oracle section is computed here, now, on this machine: the sha256 of the MLP's init_params(1)
(float32), of the lockstep batches and noise the oracle is fed (harness.verification.parity.lockstep_inputs,
real MNIST), and the float64 oracle's loss_and_grad at init and oracle.train_steps over 3 steps, each
tensor reduced to a fingerprint (sha256, max|a|, sum|a|, a fixed random projection, 8 fixed entries).
BLAS runs on one thread (set below, before NumPy loads): OpenBLAS gives different float64 bits with
one or two threads, so the oracle is always recorded and re-checked single-threaded.
"""
from __future__ import annotations

import os

# Before NumPy loads: OpenBLAS's result bits depend on its thread count (measured: 1 vs 2 threads differ
# in the last bits of the float64 loss), so the oracle fingerprint is always taken on one thread.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORMAT = 1
# What decides float32 kernels, and so the trained numbers' bits: the processor and these packages.
PACKAGES = ("numpy", "torch", "jax", "jaxlib", "flax", "optax")
ORACLE_SEED = 1
ORACLE_STEPS = 3
SAMPLES = 8  # fixed entries kept per oracle tensor


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def hexf(x) -> str:
    return float(x).hex()


def command_without_out(command: str) -> str:
    """The run's command line minus its --out (the folder is the recorder's, not part of the experiment)."""
    words, out = shlex.split(command), []
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        if w == "--out":
            skip = True
            continue
        if w.startswith("--out="):
            continue
        out.append(w)
    return shlex.join(out)


def run_section(run_dir: Path) -> dict:
    """The exact numbers of a run folder: losses as float.hex(), parameter arrays as sha256.

    Reads results.json itself (schema 1: test_loss and test_loss_sampled fields per epoch; schema 2: an
    epoch's `metrics` dict), so this works from a checkout of any commit, before the move or after it.
    """
    raw = json.loads((run_dir / "results.json").read_text())
    if raw.get("schema_version") not in (1, 2):
        raise SystemExit(f"{run_dir}: results.json schema_version {raw.get('schema_version')!r} is not 1 or 2")
    env = raw.get("environment", {})
    backends = {}
    for r in raw["results"]:
        if r["status"] != "ok":
            raise SystemExit(f"{run_dir}: backend {r['backend']} has status {r['status']}; record a finished run")
        epochs = []
        for e in r["epochs"]:
            metrics = e.get("metrics") or {k: e[k] for k in ("test_loss", "test_loss_sampled")}
            epochs.append({"epoch": e["epoch"], "train_loss": hexf(e["train_loss"]),
                           **{k: hexf(v) for k, v in metrics.items()}})
        with np.load(run_dir / r["backend"] / (r.get("params_file") or "params.npz")) as z:
            params = {k: {"shape": list(z[k].shape), "dtype": str(z[k].dtype),
                          "sha256": sha256(np.asarray(z[k], np.float32))} for k in z.files}
        backends[r["backend"]] = {"epochs": epochs, "params": params}
    return {
        "command": command_without_out(raw["command"]),
        "commit": env.get("git", {}).get("commit"),
        "dirty": env.get("git", {}).get("dirty"),
        "results_schema_version": raw["schema_version"],
        "machine": {"cpu": env.get("cpu"), "cpu_flags": env.get("cpu_flags", []), "cores": env.get("cores"),
                    "python": env.get("python"),
                    "packages": {k: env.get("packages", {}).get(k) for k in PACKAGES}},
        "backends": backends,
    }


def fingerprint(a: np.ndarray, key: int) -> dict:
    """A float64 tensor in a few numbers: exact (sha256) and tolerant (max|a|, sum|a|, projection, entries)."""
    a = np.asarray(a, np.float64)
    flat = a.ravel()
    rng = np.random.default_rng([0x60D, key])
    signs = rng.choice([-1.0, 1.0], size=flat.size)
    idx = np.sort(rng.choice(flat.size, size=min(SAMPLES, flat.size), replace=False))
    return {"shape": list(a.shape), "sha256": sha256(a), "absmax": hexf(np.max(np.abs(flat))),
            "l1": hexf(np.sum(np.abs(flat))), "projection": hexf(flat @ signs),
            "entries": {str(int(i)): hexf(flat[i]) for i in idx}}


def blas_version() -> str | None:
    try:
        return np.__config__.CONFIG["Build Dependencies"]["blas"].get("version")
    except (AttributeError, KeyError, TypeError):
        return None


def oracle_section() -> dict:
    """Init params, oracle inputs, and the float64 oracle's loss_and_grad and 3 Adam steps, on this machine."""
    from harness import data
    from harness.config import ModelConfig
    from harness.draws import init_params
    if hasattr(ModelConfig, "oracle"):  # the layout since the workloads/ move
        from harness.measurement import measure
        from harness.verification import oracle, parity
        loss_and_grad = ModelConfig().oracle().loss_and_grad
    else:  # before it (commit ac41dcf): flat harness/, the MLP oracle in harness/reference.py
        from harness import measure, parity
        from harness import reference as oracle
        loss_and_grad = oracle.loss_and_grad

    m = ModelConfig()  # the MLP VAE, every default
    init = init_params(ORACLE_SEED, m)
    batches, noise = parity.lockstep_inputs(data.load().train_x, ORACLE_STEPS, ORACLE_SEED, m.batch_size, m.latent_dim)
    p64 = {k: v.astype(np.float64) for k, v in init.items()}
    loss0, grads0 = loss_and_grad(p64, batches[0].astype(np.float64), noise[0].astype(np.float64))
    final, losses = oracle.train_steps(init, batches, noise, m)
    return {
        "machine": {"cpu": measure.cpu_model(), "cpu_flags": measure.cpu_flags(),
                    "numpy": np.__version__, "blas": blas_version(), "blas_threads": 1},
        "workload": getattr(m, "workload", "mlp-vae"), "seed": ORACLE_SEED, "steps": ORACLE_STEPS,
        "init_sha256": {k: sha256(v) for k, v in init.items()},
        "inputs_sha256": {"batches": [sha256(b) for b in batches], "noise": [sha256(e) for e in noise]},
        "loss_and_grad": {"loss": hexf(loss0),
                          "grads": {k: fingerprint(g, i) for i, (k, g) in enumerate(grads0.items())}},
        "train_steps": {"losses": [hexf(v) for v in losses],
                        "params": {k: fingerprint(p, 100 + i) for i, (k, p) in enumerate(final.items())}},
    }


def head_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", nargs="?", type=Path, help="a finished `harness run` folder")
    p.add_argument("--out", type=Path, help="where to write the fixture (default: stdout)")
    p.add_argument("--oracle-only", action="store_true", help="print only the oracle section, as JSON")
    p.add_argument("--code-commit", help="the commit of the code the oracle section runs (default: git HEAD of "
                                         "this checkout; give it for a `git archive` export, which has no .git)")
    args = p.parse_args(argv)
    if args.oracle_only:
        print(json.dumps(oracle_section()))
        return 0
    if args.run_dir is None:
        p.error("give a run folder, or --oracle-only")
    oracle_part = {"code_commit": args.code_commit or head_commit(), **oracle_section()}
    doc = {
        "format": FORMAT,
        "about": "MLP VAE numbers before the workloads/backends/harness move; checked by tests/test_mlp_unchanged.py",
        "recorded_by": shlex.join(["python", "benchmarks/record_golden.py", *(argv if argv is not None else sys.argv[1:])]),
        "run": run_section(args.run_dir),
        "oracle": oracle_part,
    }
    text = json.dumps(doc, indent=1) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
