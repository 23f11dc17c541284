"""The child process that trains one job (one backend, device, seed) and reports to the runner.

Started as `python -m harness.execution.worker JOB.json` by harness.execution.runner (through
child_process, the one launcher). Isolation is the point: each backend gets its own threads, memory and
crash domain. Events go to the parent as JSON lines (harness/channel.py); `train` reads as the job's
steps in order. After every epoch the full training state is checkpointed atomically, so `--resume`
can continue.
"""
from __future__ import annotations

import time

STARTED_AT, STARTED = time.time(), time.perf_counter()  # before the imports: they are part of the wall time

import dataclasses
import json
import math
import os
import resource
import sys
from pathlib import Path

import numpy as np

from backends.base import pass_noise
from harness import atomic, data
from harness.channel import Events, pin_threads, serve
from harness.config import RunConfig
from harness.draws import epoch_permutation, init_params
from harness.execution import caches
from harness.measurement.results import EpochRecord
from harness.measurement.walltime import ChildClock

CHECKPOINT = "checkpoint.npz"
PARAMS = "params.npz"


def peak_rss_bytes() -> float:
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024.0


def current_rss_bytes() -> float:
    with open("/proc/self/statm") as f:
        return float(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path) as z:
        state = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    return state, meta


def save_checkpoint(path: Path, state: dict[str, np.ndarray], meta: dict) -> None:
    atomic.write_npz(path, {**state, "meta": np.array(json.dumps(meta))})


def member_dir(job: dict, seed: int) -> tuple[Path, str]:
    """Where seed's checkpoint and params go, and the params file's name relative to the backend's
    folder (what results.json records): the backend's folder itself, or its seed-<s>/ in a multi-seed run."""
    sub = job.get("member_dirs", {}).get(str(seed), "")
    backend_dir = Path(job.get("backend_dir") or job["job_dir"])
    return backend_dir / sub, f"{sub}/{PARAMS}" if sub else PARAMS


def train(job: dict, events: Events, clock: ChildClock | None = None) -> None:
    """The whole job, in the order a reader follows it: start, data, set-up (or resume), compile, the
    epochs, the extra timed repeats, the trained params."""
    config = RunConfig.from_dict(job["config"])
    clock = clock or ChildClock(time.time())
    # Before the framework is imported: both read their cache settings from the environment then.
    with caches.activated(config.cold_compile) as compile_caches:
        backend, config = start(job, config, events, clock)
        train_x, test_x = load_data(job, config, clock)
        first_epoch, elapsed = set_up(backend, job, config, train_x, test_x, events, clock)
        elapsed += compile_programs(backend, job["backend"], compile_caches, events, clock)
        if not train_epochs(backend, job, config, train_x.shape[0], test_x.shape[0], first_epoch, elapsed,
                            events, clock):
            return
        if config.repeats:
            t = time.perf_counter()
            repeats = timed_repeats(backend, config, lambda e: epoch_inputs(config, job["seed"], e, train_x.shape[0]))
            clock.since("repeats", t)
            events.send("repeats", train_seconds=repeats)
        save_params(backend, *member_dir(job, job["seed"]), events, clock)


def start(job: dict, config: RunConfig, events: Events, clock: ChildClock):
    """Pin the threads, then import the framework and create the engine (its thread pools see the
    pinning): the seed-ensemble engine when the job names several seeds."""
    t = time.perf_counter()
    threads = pin_threads(config.threads, job.get("cores"))
    import backends
    config = dataclasses.replace(config, threads=threads)
    backend = (backends.create_ensemble if job.get("seeds") else backends.create)(job["backend"])
    clock.since("interpreter_and_imports", t)
    events.send("started", pid=os.getpid(), threads=threads, cores=sorted(os.sched_getaffinity(0)))
    return backend, config


def load_data(job: dict, config: RunConfig, clock: ChildClock) -> tuple[np.ndarray, np.ndarray]:
    """The training and test images, cut to the run's limits (tests train on a few hundred)."""
    t = time.perf_counter()
    mnist = data.load(job["data_dir"], allow_download=False)
    train_x = mnist.train_x[:config.train_limit] if config.train_limit else mnist.train_x
    test_x = mnist.test_x[:config.test_limit] if config.test_limit else mnist.test_x
    clock.since("data_load", t)
    return train_x, test_x


def set_up(backend, job: dict, config: RunConfig, train_x, test_x, events: Events, clock: ChildClock) -> tuple[int, float]:
    """The harness's initial weights (or the checkpoint, on resume) and the data onto the device; returns
    the first epoch to train and the seconds already spent."""
    from backends.info import framework_info
    t = time.perf_counter()
    backend.setup(init_params(job["seed"], config.model), train_x, test_x, config)
    first_epoch, elapsed = 1, 0.0
    checkpoint = member_dir(job, job["seed"])[0] / CHECKPOINT
    if job.get("resume") and checkpoint.exists():
        state, meta = load_checkpoint(checkpoint)
        backend.set_state(state)
        first_epoch, elapsed = meta["epoch"] + 1, meta["elapsed_seconds"]
        events.send("resumed", epoch=meta["epoch"], record=meta["record"])
    backend.synchronize()
    setup_seconds = time.perf_counter() - t
    clock.add("framework_init", setup_seconds)
    # After setup: engines apply their precision settings there, and the record must show the real ones.
    info = framework_info(job["backend"], config, getattr(backend, "describe", dict)())
    events.send("setup", setup_seconds=setup_seconds, wall=clock.snapshot(), backend_info=info,
                memory={"rss_before_training_bytes": current_rss_bytes(),
                        **_prefix(backend.device_memory(), "device_before_training_")})
    return first_epoch, elapsed


def compile_programs(backend, name: str, compile_caches: caches.CompileCaches, events: Events,
                     clock: ChildClock) -> float:
    """The engine's warm-up (every compile, before timing starts), with the compile cache's state."""
    import backends
    compiler = backends.REGISTRY[name].compiler
    cache_folder = compile_caches.folder(compiler)
    before = caches.count_entries(cache_folder)
    t = time.perf_counter()
    backend.warmup()
    backend.synchronize()
    compile_seconds = time.perf_counter() - t
    clock.add("compile", compile_seconds)
    after = caches.count_entries(cache_folder)
    cache_state = caches.classify(compiler, compile_caches.forced_cold, before, after)
    if cache_folder is not None:  # for the stderr log: how the state was decided
        print(f"compile cache {cache_folder}: {before} -> {after} entries: {cache_state}", file=sys.stderr)
    events.send("compiled", compile_seconds=compile_seconds, compile_cache=cache_state, wall=clock.snapshot())
    return compile_seconds


def train_epochs(backend, job: dict, config: RunConfig, n: int, n_test: int, first_epoch: int, elapsed: float,
                 events: Events, clock: ChildClock) -> bool:
    """Train and evaluate each epoch, checkpointing after each; False when the losses stopped being finite."""
    seed = job["seed"]
    last_finite = None
    eval_noise = pass_noise(config.noise, seed, 0, n_test, config.model.latent_dim)
    for epoch in range(first_epoch, config.epochs + 1):
        train_loss, metrics, train_seconds, eval_seconds = timed_epoch(
            backend, epoch_inputs(config, seed, epoch, n), eval_noise, clock)
        elapsed += train_seconds + eval_seconds
        losses = (train_loss, *metrics.values())
        if not all(math.isfinite(x) for x in losses):
            events.send("diverged", epoch=epoch, last_finite_loss=last_finite, losses=list(map(str, losses)))
            return False
        last_finite = train_loss
        record = EpochRecord(epoch=epoch, train_loss=train_loss, metrics=metrics, train_seconds=train_seconds,
                             eval_seconds=eval_seconds, samples_per_second=n / train_seconds,
                             eval_samples_per_second=n_test / eval_seconds, elapsed_seconds=elapsed)
        t = time.perf_counter()
        save_checkpoint(member_dir(job, seed)[0] / CHECKPOINT, backend.get_state(),
                        {"epoch": epoch, "elapsed_seconds": elapsed, "record": record.__dict__})
        clock.since("write", t)
        events.send("epoch", record=record.__dict__, memory=_memory(backend), wall=clock.snapshot())
    return True


def save_params(backend, folder: Path, params_file: str, events: Events, clock: ChildClock) -> None:
    """The trained weights (no Adam state) for reports and `harness evaluate`; then `done`."""
    t = time.perf_counter()
    atomic.write_npz(folder / PARAMS, trained_params(backend.get_state()))
    clock.since("write", t)
    events.send("done", params_file=params_file, memory=_memory(backend), wall=clock.snapshot())


def trained_params(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A training state without its optimizer entries."""
    return {k: v for k, v in state.items() if not k.startswith("adam.")}


def epoch_inputs(config: RunConfig, seed: int, epoch: int, n: int) -> tuple:
    """The permutation and noise of `seed`'s epoch over n samples (made before the timed window)."""
    return epoch_permutation(seed, epoch, n), pass_noise(config.noise, seed, epoch, n, config.model.latent_dim)


def timed_epoch(backend, inputs: tuple, eval_noise, clock: ChildClock) -> tuple:
    """One training epoch on `inputs` (permutation, noise) and the evaluation after it, each timed and
    added to the clock: (train result, metrics, train seconds, eval seconds). A single-seed engine and
    a seed ensemble alike: what they return is theirs."""
    t = time.perf_counter()
    trained = backend.train_epoch(*inputs)
    train_seconds = time.perf_counter() - t
    t = time.perf_counter()
    metrics = backend.evaluate(eval_noise)
    eval_seconds = time.perf_counter() - t
    clock.add("train", train_seconds)
    clock.add("evaluate", eval_seconds)
    return trained, metrics, train_seconds, eval_seconds


def timed_repeats(backend, config: RunConfig, inputs) -> list[float]:
    """`repeats` more timed training epochs for tighter steady-state figures, epoch e on `inputs(e)`; the
    trained state is saved before and restored after, so losses and saved params are those of the run."""
    saved = backend.get_state()
    seconds = []
    for epoch in range(config.epochs + 1, config.epochs + config.repeats + 1):
        args = inputs(epoch)  # outside the timed window
        t = time.perf_counter()
        backend.train_epoch(*args)
        seconds.append(time.perf_counter() - t)
    backend.set_state(saved)
    return seconds


def _prefix(d: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in d.items()}


def _memory(backend) -> dict[str, float]:
    return {"peak_rss_bytes": peak_rss_bytes(), **_prefix(backend.device_memory(), "device_")}


def main(argv: list[str]) -> int:
    clock = ChildClock(STARTED_AT)
    clock.since("interpreter_and_imports", STARTED)
    return serve(argv, lambda job, events: train(job, events, clock))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
