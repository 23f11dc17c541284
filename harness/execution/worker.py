"""The child process that trains one job (one backend, device, seed) and reports to the runner.

Started as `python -m harness.execution.worker JOB.json` by harness.execution.runner. Isolation is the point: each backend
gets its own threads, memory and crash domain. Events go to the parent as JSON lines on the original
stdout; anything a library prints is redirected to stderr, which the parent keeps in a log file.
After every epoch the full training state is checkpointed atomically, so `--resume` can continue.
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
from harness.config import RunConfig
from harness.draws import epoch_permutation, init_params
from harness.errors import HarnessError
from harness.execution import caches
from harness.measurement.results import EpochRecord
from harness.measurement.walltime import ChildClock

CHECKPOINT = "checkpoint.npz"
PARAMS = "params.npz"


class Events:
    """JSON-lines channel to the parent on a private duplicate of fd 1."""

    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # stray prints from frameworks must not corrupt the channel
        sys.stdout = sys.stderr

    def send(self, event: str, **fields) -> None:
        self.out.write(json.dumps({"event": event, **fields}) + "\n")
        self.out.flush()


def pin_threads(threads: int, cores: list[int] | None = None) -> int:
    """Use the first `threads` of `cores` (the job spec's, else this process's affinity); torch obeys
    set_num_threads, XLA sizes its pool by the affinity."""
    cores = sorted(cores or os.sched_getaffinity(0))
    threads = min(threads or len(cores), len(cores))
    os.sched_setaffinity(0, cores[:threads])
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


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


def train(job: dict, events: Events, clock: ChildClock | None = None) -> None:
    config = RunConfig.from_dict(job["config"])
    # Before the framework is imported: both read their cache settings from the environment then.
    with caches.activated(config.cold_compile) as compile_caches:
        _train(job, events, config, compile_caches, clock or ChildClock(time.time()))


def _train(job: dict, events: Events, config: RunConfig, compile_caches: caches.CompileCaches,
           clock: ChildClock) -> None:
    backend_name, seed = job["backend"], job["seed"]
    job_dir = Path(job["job_dir"])
    t = time.perf_counter()
    threads = pin_threads(config.threads, job.get("cores"))

    import backends  # after pinning, so the framework's thread pools see the affinity
    from backends.info import framework_info

    config = dataclasses.replace(config, threads=threads)
    backend = backends.create(backend_name)
    t = clock.since("interpreter_and_imports", t)
    events.send("started", pid=os.getpid(), threads=threads, cores=sorted(os.sched_getaffinity(0)))

    t = time.perf_counter()
    mnist = data.load(job["data_dir"], allow_download=False)
    train_x, test_x = mnist.train_x, mnist.test_x
    if config.train_limit:
        train_x = train_x[:config.train_limit]
    if config.test_limit:
        test_x = test_x[:config.test_limit]
    n = train_x.shape[0]

    t = clock.since("data_load", t)
    backend.setup(init_params(seed, config.model), train_x, test_x, config)
    start_epoch, elapsed = 1, 0.0
    if job.get("resume") and (job_dir / CHECKPOINT).exists():
        state, meta = load_checkpoint(job_dir / CHECKPOINT)
        backend.set_state(state)
        start_epoch, elapsed = meta["epoch"] + 1, meta["elapsed_seconds"]
        events.send("resumed", epoch=meta["epoch"], record=meta["record"])
    backend.synchronize()
    setup_seconds = time.perf_counter() - t
    clock.add("framework_init", setup_seconds)
    # After setup: backends apply their precision settings there, and the record must show the real ones.
    events.send("setup", setup_seconds=setup_seconds, wall=clock.snapshot(), backend_info=framework_info(backend_name, config, getattr(backend, "describe", dict)()),
                memory={"rss_before_training_bytes": current_rss_bytes(), **_prefix(backend.device_memory(), "device_before_training_")})

    compiler = backends.REGISTRY[backend_name].compiler
    cache_folder = compile_caches.folder(compiler)
    before = caches.count_entries(cache_folder)
    t = time.perf_counter()
    backend.warmup()
    backend.synchronize()
    compile_seconds = time.perf_counter() - t
    clock.add("compile", compile_seconds)
    elapsed += compile_seconds
    after = caches.count_entries(cache_folder)
    cache_state = caches.classify(compiler, compile_caches.forced_cold, before, after)
    if cache_folder is not None:  # for the stderr log: how the state was decided
        print(f"compile cache {cache_folder}: {before} -> {after} entries: {cache_state}", file=sys.stderr)
    events.send("compiled", compile_seconds=compile_seconds, compile_cache=cache_state, wall=clock.snapshot())

    last_finite = None
    eval_noise = pass_noise(config.noise, seed, 0, test_x.shape[0], config.model.latent_dim)
    for epoch in range(start_epoch, config.epochs + 1):
        perm, noise = epoch_permutation(seed, epoch, n), pass_noise(config.noise, seed, epoch, n, config.model.latent_dim)  # outside the timed window
        t = time.perf_counter()
        train_loss = backend.train_epoch(perm, noise)
        train_seconds = time.perf_counter() - t
        t = time.perf_counter()
        ev = backend.evaluate(eval_noise)
        eval_seconds = time.perf_counter() - t
        clock.add("train", train_seconds)
        clock.add("evaluate", eval_seconds)
        elapsed += train_seconds + eval_seconds
        losses = (train_loss, *ev.values())
        if not all(math.isfinite(x) for x in losses):
            events.send("diverged", epoch=epoch, last_finite_loss=last_finite, losses=list(map(str, losses)))
            return
        last_finite = train_loss
        record = EpochRecord(epoch=epoch, train_loss=train_loss, metrics=ev, train_seconds=train_seconds,
                             eval_seconds=eval_seconds, samples_per_second=n / train_seconds,
                             eval_samples_per_second=test_x.shape[0] / eval_seconds,
                             elapsed_seconds=elapsed)
        t = time.perf_counter()
        save_checkpoint(job_dir / CHECKPOINT, backend.get_state(),
                        {"epoch": epoch, "elapsed_seconds": elapsed, "record": record.__dict__})
        clock.since("write", t)
        events.send("epoch", record=record.__dict__, memory=_memory(backend), wall=clock.snapshot())

    if config.repeats:
        t = time.perf_counter()
        repeats = timed_repeats(backend, config, seed, n)
        clock.since("repeats", t)
        events.send("repeats", train_seconds=repeats)
    t = time.perf_counter()
    params = {k: v for k, v in backend.get_state().items() if not k.startswith("adam.")}
    atomic.write_npz(job_dir / PARAMS, params)
    clock.since("write", t)
    events.send("done", params_file=PARAMS, memory=_memory(backend), wall=clock.snapshot())


def timed_repeats(backend, config: RunConfig, seed: int, n: int) -> list[float]:
    """`repeats` more timed training epochs for tighter steady-state figures; the trained state is
    saved before and restored after, so losses and saved params are those of the run itself."""
    saved = backend.get_state()
    seconds = []
    repeats, epochs = config.repeats, config.epochs
    for r in range(1, repeats + 1):
        perm, noise = epoch_permutation(seed, epochs + r, n), pass_noise(config.noise, seed, epochs + r, n, config.model.latent_dim)
        t = time.perf_counter()
        backend.train_epoch(perm, noise)
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
    events = Events()
    job = json.loads(Path(argv[0]).read_text())
    try:
        train(job, events, clock)
    except HarnessError as exc:
        events.send("error", message=str(exc))
        return 2
    except MemoryError:
        events.send("error", message="out of memory")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
