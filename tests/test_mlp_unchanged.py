"""The MLP's numbers are unchanged by the workloads/ + backends/ + harness/ move.

tests/golden/mlp-before-move.json was recorded by benchmarks/record_golden.py with the code of commit
ac41dcf (before the move); its docstring says how. Two kinds of check:

* Everywhere (never skipped): the MLP's init_params(1) and the oracle's inputs are bit-identical to the
  recorded ones, and the float64 oracle (loss_and_grad at init, oracle.train_steps over 3 Adam steps on
  real MNIST batches) agrees with the recorded values to ORACLE_RTOL. Not bit for bit: NumPy's float64
  matmuls go through OpenBLAS, which picks its kernel by processor (DYNAMIC_ARCH) and splits work by
  thread count, and a different kernel sums in a different order. Measured on the recording machine,
  forcing OpenBLAS's Haswell or Zen kernel (what an AMD EPYC without AVX-512 gets) instead of its own
  changes the gradients by up to 6e-16 and, through Adam, the 3-step params by up to 4e-14 of their
  tensor's largest entry; one vs two BLAS threads also changes the last bits. Init params and inputs
  are exact anywhere: uniform draws, a float32 cast, /255 and a gather, no BLAS, no reduction.
  Where the recording machine and NumPy/OpenBLAS are the same, the oracle is also compared bit for bit.
* On the fixture's machine only (slow): the recorded `harness run` command, rerun with today's code,
  gives bit-identical train/test losses per epoch and bit-identical saved params for torch-reference,
  torch, torch-compile and jax. Float32 kernels (oneDNN, XLA, OpenBLAS) differ between processor kinds
  and library versions, so elsewhere the comparison means nothing and the test skips, saying why.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

from harness.config import ModelConfig
from harness.draws import init_params
from harness.measurement import measure, results
from tests.conftest import ROOT, harness

GOLDEN = json.loads((ROOT / "tests" / "golden" / "mlp-before-move.json").read_text())
# The same `harness run` recorded on other processor kinds (the float32 run section is per machine):
# mlp-before-move-amd-epyc.json's run came from the code of ac41dcf (a `git archive` of it, so its record
# names no commit) on a 2-core AMD EPYC (AVX-512) with today's pinned packages; its oracle section was
# computed with the code of the commit that added it (the oracle is checked to ORACLE_RTOL anyway).
RUN_FIXTURES = [GOLDEN] + [json.loads(p.read_text()) for p in sorted((ROOT / "tests" / "golden").glob("mlp-before-move-*.json"))]
RECORDER = ROOT / "benchmarks" / "record_golden.py"
# Float64 oracle agreement, relative to each tensor's scale (max|ref| for entries, sum|ref| for sums
# and projections; |ref| for a loss). 1e-12 is 25x the largest change measured from a different
# OpenBLAS kernel (4e-14, see above) and still 8 orders below anything a changed formula, init, batch
# or noise does (an Adam step moves a weight by ~lr = 1e-3, a few percent of max|w|).
ORACLE_RTOL = 1e-12
# What decides the float32 kernels a run uses, besides the processor (numpy: init, data, noise on the
# host; optax: jax's Adam).
PACKAGES = ("numpy", "torch", "jax", "jaxlib", "flax", "optax")
# Environment variables that change kernels or thread counts; the recorded run had none set.
KERNEL_ENV = ("XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
              "NPY_DISABLE_CPU_FEATURES")


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def unhex(s: str) -> float:
    return float.fromhex(s)


@pytest.fixture(scope="module")
def oracle_now() -> dict:
    """The oracle section as the recorder computes it now, in a fresh process (BLAS on one thread)."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV}
    proc = subprocess.run([sys.executable, str(RECORDER), "--oracle-only"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_mlp_init_params_are_bit_identical():
    init = init_params(GOLDEN["oracle"]["seed"], ModelConfig())
    recorded = GOLDEN["oracle"]["init_sha256"]
    assert list(init) == list(recorded)
    assert all(v.dtype == np.float32 for v in init.values())
    assert {k: sha256(v) for k, v in init.items()} == recorded


def test_oracle_inputs_are_bit_identical(oracle_now):
    assert oracle_now["init_sha256"] == GOLDEN["oracle"]["init_sha256"]
    assert oracle_now["inputs_sha256"] == GOLDEN["oracle"]["inputs_sha256"]


def oracle_deviations(recorded: dict, now: dict) -> dict[str, float]:
    """Every compared value's |now - recorded| divided by its scale (so <= ORACLE_RTOL passes)."""
    dev = {"loss_and_grad.loss": abs(unhex(now["loss_and_grad"]["loss"]) - unhex(recorded["loss_and_grad"]["loss"]))
           / abs(unhex(recorded["loss_and_grad"]["loss"]))}
    assert len(now["train_steps"]["losses"]) == len(recorded["train_steps"]["losses"]) == recorded["steps"]
    for i, (a, b) in enumerate(zip(now["train_steps"]["losses"], recorded["train_steps"]["losses"])):
        dev[f"train_steps.loss[{i}]"] = abs(unhex(a) - unhex(b)) / abs(unhex(b))
    for part, key in (("loss_and_grad", "grads"), ("train_steps", "params")):
        ref_t, cur_t = recorded[part][key], now[part][key]
        assert list(cur_t) == list(ref_t), part
        for name, ref in ref_t.items():
            cur = cur_t[name]
            assert cur["shape"] == ref["shape"], name
            absmax, l1 = unhex(ref["absmax"]), unhex(ref["l1"])
            assert absmax > 0 and l1 > 0, name  # a dead tensor would make the check vacuous
            tag = f"{part}.{name}"
            dev[f"{tag}.absmax"] = abs(unhex(cur["absmax"]) - absmax) / absmax
            dev[f"{tag}.l1"] = abs(unhex(cur["l1"]) - l1) / l1
            dev[f"{tag}.projection"] = abs(unhex(cur["projection"]) - unhex(ref["projection"])) / l1
            assert list(cur["entries"]) == list(ref["entries"]), name
            for i, v in ref["entries"].items():
                dev[f"{tag}[{i}]"] = abs(unhex(cur["entries"][i]) - unhex(v)) / absmax
    return dev


def test_oracle_agrees_with_the_recorded_values(oracle_now):
    """Runs everywhere: loss_and_grad and 3 Adam steps of the float64 oracle, to ORACLE_RTOL."""
    dev = oracle_deviations(GOLDEN["oracle"], oracle_now)
    bad = {k: v for k, v in dev.items() if not v <= ORACLE_RTOL}
    assert not bad, bad


def oracle_machine_difference(now: dict) -> str | None:
    rec = GOLDEN["oracle"]["machine"]
    diffs = [f"{k} {now['machine'].get(k)!r} here, {rec.get(k)!r} in the fixture"
             for k in ("cpu", "cpu_flags", "numpy", "blas", "blas_threads") if now["machine"].get(k) != rec.get(k)]
    return "; ".join(diffs) or None


def test_oracle_is_bit_identical_on_the_recording_machine(oracle_now):
    why = oracle_machine_difference(oracle_now)
    if why:
        pytest.skip(f"float64 oracle bits depend on the OpenBLAS kernel, chosen per processor: {why} "
                    f"(test_oracle_agrees_with_the_recorded_values still compares to {ORACLE_RTOL})")
    rec = GOLDEN["oracle"]
    for part in ("init_sha256", "inputs_sha256", "loss_and_grad", "train_steps"):
        assert oracle_now[part] == rec[part], part


# ---------------------------------------------------------------- the whole run, bit for bit

def run_machine_difference(fixture: dict) -> str | None:
    """Why this machine cannot reproduce `fixture`'s float32 bits, or None when it can."""
    rec = fixture["run"]["machine"]
    here = {"cpu": measure.cpu_model(), "cpu_flags": measure.cpu_flags(),
            "packages": measure.package_versions(PACKAGES)}
    diffs = []
    if here["cpu"] != rec["cpu"]:
        diffs.append(f"CPU model {here['cpu']!r} here, {rec['cpu']!r} in the fixture")
    if here["cpu_flags"] != rec["cpu_flags"]:  # the same generic model name can hide another ISA (AVX-512, AMX)
        extra, missing = sorted(set(here["cpu_flags"]) - set(rec["cpu_flags"])), sorted(set(rec["cpu_flags"]) - set(here["cpu_flags"]))
        diffs.append(f"CPU SIMD flags differ (here also {extra or 'none'}, here lacking {missing or 'none'})")
    for name in PACKAGES:
        if here["packages"].get(name) != rec["packages"].get(name):
            diffs.append(f"{name} {here['packages'].get(name)} here, {rec['packages'].get(name)} in the fixture")
    return "; ".join(diffs) or None


@pytest.mark.slow
def test_mlp_run_is_bit_identical_to_before_the_move(tmp_path):
    why = {i: run_machine_difference(f) for i, f in enumerate(RUN_FIXTURES)}
    fitting = [RUN_FIXTURES[i] for i, w in why.items() if w is None]
    if not fitting:
        pytest.skip("bit-identical MLP numbers are only comparable on the machine and library versions of "
                    f"a tests/golden/mlp-before-move*.json fixture (float32 kernels differ between processor kinds "
                    f"and library versions): {'; '.join(why.values())}")
    run = fitting[0]["run"]
    words = shlex.split(run["command"])
    assert words[:3] == ["python", "-m", "harness"] and "--out" not in words
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV}
    proc = harness(*words[3:], "--out", tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = results.load(tmp_path)
    assert [r.backend for r in record.results] == list(run["backends"])
    for r in record.results:
        rec = run["backends"][r.backend]
        assert r.status == "ok", (r.backend, r.error)
        got = [{"epoch": e.epoch, "train_loss": e.train_loss.hex(), **{k: v.hex() for k, v in e.metrics.items()}}
               for e in r.epochs]
        assert got == rec["epochs"], (r.backend, [{k: (float.fromhex(v) if isinstance(v, str) else v)
                                                   for k, v in e.items()} for e in got])
        with np.load(tmp_path / r.backend / r.params_file) as z:
            params = {k: {"shape": list(z[k].shape), "dtype": str(z[k].dtype), "sha256": sha256(z[k])}
                      for k in z.files}
        assert list(params) == list(rec["params"]), r.backend
        changed = [k for k in params if params[k] != rec["params"][k]]
        assert not changed, f"{r.backend}: params differ from before the move: {changed}"
