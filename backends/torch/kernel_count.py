"""How many device operations (kernels, copies, sets) one training step of an engine issues on CUDA.

The latency floor (harness/measurement/roofline.py) is steps x kernels per step x the cost of one kernel
in a replayed CUDA graph: however well an engine graphs its step, every kernel costs at least that. The
count comes from torch's profiler (Kineto over CUPTI), whose activity records are process-wide, so an
engine of another framework trained in this process (jax) is counted too. Called by the probe child
(`harness probe --count-kernels`, a step of benchmarks/gpu_check.sh); it has never run on a GPU yet.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import backends
from backends.base import pass_noise
from harness.config import RunConfig
from harness.draws import init_params

# Steps of the counted epoch. Operations issued once per epoch (the loss copied to the host, say) are
# spread over these steps, so a count per step errs high by (per-epoch operations) / STEPS.
STEPS = 64


def device_operations(events) -> int:
    """The profiler events that ran on the GPU (kernels, memcpy, memset), whatever launched them."""
    return sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)


def kernels_per_step(name: str, config: RunConfig) -> float:
    """Device operations per step of engine `name` training `config`'s model on random data."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # jax beside torch on one GPU
    m = config.model
    n = m.batch_size * STEPS
    x = np.random.default_rng(0).random((n, m.input_dim), dtype=np.float32)
    engine = backends.create(name)
    engine.setup(init_params(config.seed, m), x, x[: m.batch_size], config)
    engine.warmup()
    perm = np.arange(n)
    noise = pass_noise(config.noise, config.seed, 1, n, m.latent_dim)
    engine.train_epoch(perm, noise)  # lazy work (autotuning, graph capture) happens outside the count
    engine.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        engine.train_epoch(perm, noise)
        engine.synchronize()
    return device_operations(prof.events()) / STEPS
