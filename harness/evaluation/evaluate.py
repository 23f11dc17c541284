"""`python -m harness evaluate RUN_DIR [--iwae K]`: the importance-weighted log-likelihood of saved runs.

For every backend of a run (or every job of a sweep folder) that saved its params, a child process
of the backend's own framework (the `iwae` module its package declares in the registry:
backends/torch/iwae.py for torch, torch-compile and torch-reference, backends/jax/iwae.py for jax)
loads `<backend>/params.npz` on the run's device and computes each test image's IWAE bound in float32 from the harness's shared noise (harness/evaluation/iwae.py). The estimate,
NLL = -mean bound in nats per test image with its standard error over test images, goes into
results.json as `results[i].evaluation.iwae` (`iwae_subset` with --test-limit; rewritten atomically
after each backend); the per-image bounds go beside the params as `<backend>/iwae-k<K>[-n<N>].npy`,
so two backends can be compared image by image. The child is pinned to `--threads` cores before its framework starts, like a training job.
"""
from __future__ import annotations

import dataclasses
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import backends
from harness import atomic
from harness.config import ModelConfig
from harness.errors import HarnessError
from harness.evaluation import iwae
from harness.execution import child_process
from harness.measurement import results

DEFAULT_K = 5000  # the IWAE paper's evaluation
# (image, draw) rows per batch: on CPU about a thousand keeps a batch's logits in cache (small batches
# were the faster ones here); GPUs want big batches to fill the device.
ROWS_PER_BATCH = {"cpu": 1024, "cuda": 65536}


@dataclass(frozen=True)
class Options:
    """What `harness evaluate` was asked for, shared by every backend it evaluates."""

    k: int = DEFAULT_K
    backends: tuple[str, ...] = ()  # empty = every backend of the run that saved params
    test_limit: int = 0  # 0 = the whole test set
    batch: int = 0  # test images per batch; 0 = ROWS_PER_BATCH // K
    threads: int = 0  # 0 = every core of this process's affinity
    device: str = ""  # "" = the device the backend trained on
    noise: str = "harness"  # "counter": the draws generated on the evaluating device (harness/counter_noise.py)
    data_dir: str | None = None



def default_batch(k: int, device: str) -> int:
    """Test images per batch so that a batch decodes about ROWS_PER_BATCH[device kind] rows."""
    return max(1, ROWS_PER_BATCH["cuda" if device.startswith("cuda") else "cpu"] // k)


def evaluator_module(backend: str) -> str:
    """The child module that evaluates `backend`: the one of the framework it trained with."""
    framework = backends.framework_of(backend)
    if not framework.iwae:
        raise HarnessError(f"{backend}: no IWAE evaluator for framework {framework.name!r}")
    if not backends.installed(framework.name):
        raise HarnessError(f"{backend}: evaluating needs {framework.name}; pip install -e '.[{framework.extra}]'")
    return framework.iwae


def evaluate_result(run_dir: Path, result: results.BackendResult, seed: int, opts: Options,
                    mnist_dir: Path, model: ModelConfig) -> dict:
    """IWAE of one backend's saved params of `model` (the run's workload and sizes): the `evaluation.iwae`
    record (bounds saved beside the params)."""
    module = evaluator_module(result.backend)
    device = opts.device or result.device
    with tempfile.TemporaryDirectory(prefix="vae-bench-iwae-") as tmp:
        args = {"params": str(run_dir / result.backend / result.params_file), "model": dataclasses.asdict(model),
                "data_dir": str(mnist_dir),
                "device": device, "k": opts.k, "seed": seed, "test_limit": opts.test_limit,
                "batch": opts.batch or default_batch(opts.k, device), "out": str(Path(tmp) / "bounds.npy"),
                "noise": opts.noise}
        t = time.perf_counter()
        timing = child_process.call(module, args, Path(tmp), cores=child_process.cores_for(opts.threads))
        wall = time.perf_counter() - t
        bounds = np.load(args["out"])
    name = f"iwae-k{opts.k}{f'-n{len(bounds)}' if opts.test_limit else ''}.npy"
    buf = io.BytesIO()
    np.save(buf, bounds)
    atomic.write_bytes(run_dir / result.backend / name, buf.getvalue())
    nll, stderr = iwae.nll_and_stderr(bounds)
    return {"k": opts.k, "nll": nll, "stderr": stderr, "seed": seed, **timing, "wall_seconds": wall,
            "bounds_file": name}


def run_dirs_of(path: Path, names: tuple[str, ...] = ()) -> list[Path]:
    """A run folder itself, or the folders of a sweep's finished jobs (of the backends named, if any)."""
    if (path / "sweep.json").exists():
        from harness.sweeps import sweep
        state = sweep.load(path)
        return [path / j.run_dir for j in state.jobs if j.status == "ok" and (not names or j.backend in names)]
    return [path]


def _say(line: str) -> None:
    print(line, flush=True)  # each backend's line as it finishes, also when stdout is a file


def evaluate_run(run_dir: Path, opts: Options, mnist_dir: Path, say=_say) -> list[str]:
    """Evaluate the selected backends of one run, saving results.json after each; return the failures."""
    record = results.load(run_dir)
    record.config.model.spec()  # a workload this version does not know is one error line
    model = record.config.model  # the run's sizes, not the defaults
    chosen = [r for r in record.results if not opts.backends or r.backend in opts.backends]
    missing = sorted(set(opts.backends) - {r.backend for r in record.results})
    if missing:
        raise HarnessError(f"{run_dir}: no result for backend {', '.join(missing)} in this run")
    # A quick estimate on a test subset is kept apart, so it never replaces a whole-test-set one.
    key = "iwae_subset" if opts.test_limit else "iwae"
    failures = []
    for r in chosen:
        if r.status != "ok" or not r.params_file:
            say(f"{run_dir} {r.backend}: skipped ({r.status}, no saved params)")
            continue
        try:
            r.evaluation = {**(r.evaluation or {}), key: evaluate_result(run_dir, r, r.seed, opts, mnist_dir, model)}
        except HarnessError as exc:
            failures.append(f"{run_dir} {r.backend}: {exc}")
            say(f"{run_dir} {r.backend}: failed: {exc}")
            continue
        results.save(record, run_dir)
        say(f"{run_dir} {r.backend}: {describe(r.evaluation[key])}")
    return failures


def describe(e: dict) -> str:
    """One line: 'NLL (IWAE, K=<k>) <nll> +- <stderr> nats over <n> test images; <seconds> s on <device>, ...'."""
    return (f"NLL (IWAE, K={e['k']}) {e['nll']:.2f} +- {e['stderr']:.2f} nats over {e['test_samples']} test "
            f"images; {e['seconds']:.1f} s on {e['device']}, {e['threads']} thread(s) "
            f"(noise {e['noise_seconds']:.1f} s, compile {e['compile_seconds']:.1f} s, process {e['wall_seconds']:.1f} s)")


