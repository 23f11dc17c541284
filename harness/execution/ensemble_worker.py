"""The child that trains one backend's seeds as one ensemble (`harness run --seeds A-B --ensemble`).

The same steps as harness.execution.worker, for N members at once: each member gets what its own run
would get (its seed's initial weights, permutation and noise), and everything a member produces
(epoch records, divergence, checkpoint, params) goes out as that seed's, so results.json holds one
result per (backend, seed) as separate runs would. The epoch's seconds are the ensemble's: every
member's samples/s is n over them, and the aggregate (N x n over them) goes into backend_info. A member
whose losses stop being finite is reported diverged and its later epochs are not recorded; the others
go on. Before anything is placed, the ensemble's memory is estimated (ensemble_memory) against the
host's and, after set-up, the device's capacity: one that cannot fit is one error line.
"""
from __future__ import annotations

import time

STARTED_AT, STARTED = time.time(), time.perf_counter()  # before the imports: they are part of the wall time

import math
import statistics
import sys

import numpy as np

from backends.base import pass_noise
from harness.channel import Events, serve
from harness.config import RunConfig
from harness.draws import init_params
from harness.execution import caches, ensemble_memory
from harness.execution.worker import (CHECKPOINT, PARAMS, _memory, _prefix, compile_programs, current_rss_bytes,
                                      epoch_inputs, load_checkpoint, load_data, member_dir, save_checkpoint, start,
                                      timed_epoch, timed_repeats, trained_params)
from harness import atomic
from harness.measurement.results import EpochRecord
from harness.measurement.walltime import ChildClock


def train(job: dict, events: Events, clock: ChildClock) -> None:
    """The ensemble's job: start, data, memory check, set-up (or resume), compile, epochs, repeats, params."""
    config, seeds = RunConfig.from_dict(job["config"]), list(job["seeds"])
    with caches.activated(config.cold_compile) as compile_caches:
        engine, config = start(job, config, events, clock)
        train_x, test_x = load_data(job, config, clock)
        ensemble_memory.check_fits(config.model, len(seeds), len(train_x), len(test_x),
                                   ensemble_memory.host_available_bytes(), "this host's free memory")
        first_epoch, elapsed = set_up(engine, job, config, seeds, train_x, test_x, events, clock)
        elapsed += compile_programs(engine, job["backend"], compile_caches, events, clock)
        seconds, live = train_epochs(engine, job, config, seeds, len(train_x), len(test_x), first_epoch, elapsed,
                                     events, clock)
        n = len(train_x)
        repeats = timed_repeats(engine, config, lambda e: ensemble_inputs(config, seeds, e, n)) if config.repeats else []
        if repeats:
            events.send("repeats", train_seconds=repeats)
        steady = (repeats or seconds[1:] or seconds)
        events.send("ensemble", ensemble={
            "size": len(seeds), "seeds": seeds,
            "aggregate_samples_per_second": len(seeds) * len(train_x) / statistics.median(steady) if steady else None,
            "memory_estimate_bytes": ensemble_memory.estimate(config.model, len(seeds), len(train_x), len(test_x)).total})
        save_params(engine, job, seeds, live, events, clock)


def set_up(engine, job: dict, config: RunConfig, seeds: list[int], train_x, test_x, events: Events,
           clock: ChildClock) -> tuple[int, float]:
    """Every member's initial weights (or checkpoints, on resume: all at one epoch, else from the start)
    and the data onto the device; then the device's own capacity is checked."""
    from backends.info import framework_info
    t = time.perf_counter()
    engine.setup([init_params(s, config.model) for s in seeds], train_x, test_x, config)
    first_epoch, elapsed = 1, 0.0
    checkpoints = [member_dir(job, s)[0] / CHECKPOINT for s in seeds]
    for c in checkpoints:
        c.parent.mkdir(parents=True, exist_ok=True)
    if job.get("resume") and all(c.exists() for c in checkpoints):
        loaded = [load_checkpoint(c) for c in checkpoints]
        if len({meta["epoch"] for _, meta in loaded}) == 1:
            engine.set_state([state for state, _ in loaded])
            first_epoch, elapsed = loaded[0][1]["epoch"] + 1, loaded[0][1]["elapsed_seconds"]
            for seed, (_, meta) in zip(seeds, loaded):
                events.send("resumed", seed=seed, epoch=meta["epoch"], record=meta["record"])
    engine.synchronize()
    memory = engine.device_memory()
    if "capacity_bytes" in memory:
        ensemble_memory.check_fits(config.model, len(seeds), len(train_x), len(test_x), memory["capacity_bytes"],
                                   f"device {config.device}")
    setup_seconds = time.perf_counter() - t
    clock.add("framework_init", setup_seconds)
    info = framework_info(job["backend"], config, engine.describe())
    events.send("setup", setup_seconds=setup_seconds, wall=clock.snapshot(), backend_info=info,
                memory={"rss_before_training_bytes": current_rss_bytes(), **_prefix(memory, "device_before_training_")})
    return first_epoch, elapsed


def train_epochs(engine, job: dict, config: RunConfig, seeds: list[int], n: int, n_test: int, first_epoch: int,
                 elapsed: float, events: Events, clock: ChildClock) -> tuple[list[float], set[int]]:
    """Train and evaluate every member each epoch; returns the epochs' train seconds and the seeds whose
    losses stayed finite."""
    live, seconds = set(seeds), []
    last_finite: dict[int, float | None] = dict.fromkeys(seeds)
    eval_noise = [pass_noise(config.noise, s, 0, n_test, config.model.latent_dim) for s in seeds]
    for epoch in range(first_epoch, config.epochs + 1):
        train_losses, metrics, train_seconds, eval_seconds = timed_epoch(
            engine, ensemble_inputs(config, seeds, epoch, n), eval_noise, clock)
        elapsed += train_seconds + eval_seconds
        seconds.append(train_seconds)
        states = engine.get_state()
        for i, seed in enumerate(seeds):
            if seed not in live:
                continue
            losses = (float(train_losses[i]), *metrics[i].values())
            if not all(math.isfinite(x) for x in losses):
                live.discard(seed)
                events.send("diverged", seed=seed, epoch=epoch, last_finite_loss=last_finite[seed],
                            losses=list(map(str, losses)))
                continue
            last_finite[seed] = losses[0]
            record = EpochRecord(epoch=epoch, train_loss=losses[0], metrics=metrics[i], train_seconds=train_seconds,
                                 eval_seconds=eval_seconds, samples_per_second=n / train_seconds,
                                 eval_samples_per_second=n_test / eval_seconds, elapsed_seconds=elapsed)
            t = time.perf_counter()
            save_checkpoint(member_dir(job, seed)[0] / CHECKPOINT, states[i],
                            {"epoch": epoch, "elapsed_seconds": elapsed, "record": record.__dict__})
            clock.since("write", t)
            events.send("epoch", seed=seed, record=record.__dict__, memory=_memory(engine), wall=clock.snapshot())
    return seconds, live


def ensemble_inputs(config: RunConfig, seeds: list[int], epoch: int, n: int) -> tuple:
    """Every member's permutation (stacked, (N, n)) and noise of `epoch`: what each seed's own run gets."""
    per_seed = [epoch_inputs(config, s, epoch, n) for s in seeds]
    return np.stack([perm for perm, _ in per_seed]), [noise for _, noise in per_seed]


def save_params(engine, job: dict, seeds: list[int], live: set[int], events: Events, clock: ChildClock) -> None:
    """Each finished member's trained weights in its own folder; then its `done`."""
    t = time.perf_counter()
    states = engine.get_state()
    for seed, state in zip(seeds, states):
        if seed not in live:
            continue
        folder, params_file = member_dir(job, seed)
        atomic.write_npz(folder / PARAMS, trained_params(state))
        events.send("done", seed=seed, params_file=params_file, memory=_memory(engine), wall=clock.snapshot())
    clock.since("write", t)


def main(argv: list[str]) -> int:
    clock = ChildClock(STARTED_AT)
    clock.since("interpreter_and_imports", STARTED)
    return serve(argv, lambda job, events: train(job, events, clock))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
