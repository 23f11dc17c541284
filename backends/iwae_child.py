"""The framework-free driver of the IWAE evaluators (backends/torch/iwae.py, backends/jax/iwae.py).

`python -m backends.<framework>.iwae JOB.json` (started by harness.execution.child_process.call, the
one launcher, already pinned to its cores) loads one run's saved params and the test images, walks
them in batches, takes each batch's noise from harness.draws.iwae_noise (the same draws for every backend)
and hands (images, noise) to the framework's `bounds` function, which returns each image's
log-mean-exp of its K importance weights. The per-image bounds go to an .npy file named in the job;
the timings go back as one `result` event (harness/channel.py); an error is one `error` event.

Job keys: params (path to params.npz), model (the run's ModelConfig as a dict: workload and sizes),
data_dir, device, k, seed, test_limit (0 = all), batch (test images per batch), out (.npy path),
noise ("harness": host draws of harness.draws.iwae_noise; "counter": CounterDraws, generated on the device).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from harness import data
from harness.channel import Events, serve
from harness.counter_noise import NOISE_DEFINITION
from harness.config import ModelConfig
from harness.draws import check_k, iwae_noise

from harness.errors import HarnessError


@dataclass(frozen=True)
class CounterDraws:
    """The eps of images start..stop-1 under `--noise counter`, for the evaluator to generate on its device:
    rows start*K .. stop*K - 1 of the stream (seed, epoch word = K, STREAM_IWAE) of harness/counter_noise.py,
    reshaped to (stop - start, K, latent); harness.draws.iwae_counter_noise is the host reference."""

    seed: int
    k: int
    start: int
    stop: int
    latent: int


class Bounds(Protocol):
    """A framework's evaluator: per-image bounds (float32, shape (B,)) from images (B, D) and eps
    (B, K, L): the harness's host array, or the CounterDraws to generate on the device."""

    def __call__(self, x: np.ndarray, eps: np.ndarray | CounterDraws) -> np.ndarray: ...


# make(params, device, k, batch, model) -> (bounds, compile_seconds, device description, framework version)
Factory = Callable[[dict[str, np.ndarray], str, int, int, ModelConfig], tuple[Bounds, float, str, str]]


def load_params(path: str, model: ModelConfig) -> dict[str, np.ndarray]:
    """The saved state_dict arrays of `model`'s workload (torch layout), float32, checked against its shapes."""
    with np.load(path) as npz:
        missing = [k for k in model.param_order() if k not in npz.files]
        if missing:
            raise HarnessError(f"{path}: not a {model.workload} params file (no {', '.join(missing)})")
        params = {k: np.asarray(npz[k], dtype=np.float32) for k in model.param_order()}
    wrong = [f"{k} {a.shape} != {tuple(model.shapes()[k])}" for k, a in params.items() if a.shape != tuple(model.shapes()[k])]
    if wrong:
        raise HarnessError(f"{path}: not the run's {model.workload} (latent {model.latent_dim}): {wrong[0]}")
    return params


def evaluate(args: dict, make: Factory) -> dict:
    """Run the evaluation described by `args`; write the bounds to args['out'] and return the timings."""
    k = check_k(args["k"])
    model = ModelConfig.from_dict(args.get("model") or {})
    params = load_params(args["params"], model)
    test_x = data.load(args["data_dir"], allow_download=False).test_x
    if args.get("test_limit"):
        test_x = test_x[: args["test_limit"]]
    batch = max(1, min(int(args["batch"]), len(test_x)))
    latent = model.latent_dim
    bounds, compile_seconds, device, framework = make(params, args["device"], k, batch, model)
    out = np.empty(len(test_x), dtype=np.float32)
    noise_seconds = 0.0
    t0 = time.perf_counter()
    for lo in range(0, len(test_x), batch):
        hi = min(lo + batch, len(test_x))
        t = time.perf_counter()
        counter = args.get("noise") == "counter"
        eps = CounterDraws(args["seed"], k, lo, hi, latent) if counter else iwae_noise(args["seed"], k, lo, hi, latent)
        noise_seconds += time.perf_counter() - t
        out[lo:hi] = bounds(test_x[lo:hi], eps)  # returns host numbers: the device has finished
    seconds = time.perf_counter() - t0
    np.save(args["out"], out)
    return {"seconds": seconds, "noise_seconds": noise_seconds, "compile_seconds": compile_seconds,
            "device": device, "framework": framework, "threads": len(os.sched_getaffinity(0)),
            "batch": batch, "test_samples": len(test_x),
            "noise": NOISE_DEFINITION if args.get("noise") == "counter" else "harness"}


def main(argv: list[str], make: Factory) -> int:
    """Entry point of a framework module: the timings as one `result` event; errors as one line."""
    def work(job: dict, events: Events) -> None:
        try:
            events.send("result", **evaluate(job, make))
        except (ValueError, OSError) as exc:
            raise HarnessError(str(exc)) from None
    return serve(argv, work)
