"""Micro-benchmarks: one training step per backend (pytest-benchmark), out of the default test run.

    pytest benchmarks/ --benchmark-only --benchmark-json=benchmarks/latest.json
    pytest-benchmark compare benchmarks/latest.json other.json

A step is a full-size batch of 128 real MNIST images with fixed noise; every backend is warmed up
(compiled) first, so the figures are steady-state. Device: VAE_BENCH_DEVICE (default cpu).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import backends
from harness import data
from harness.config import RunConfig
from harness.draws import init_params


@pytest.fixture(scope="module")
def batch():
    mnist = data.load()
    rng = np.random.default_rng(0)
    return mnist.train_x[:128].copy(), rng.standard_normal((128, 20)).astype(np.float32), mnist


@pytest.mark.parametrize("name", ["torch-reference", "torch", "torch-compile", "jax"])
def test_train_step(benchmark, batch, name):
    x, eps, mnist = batch
    config = RunConfig(device=os.environ.get("VAE_BENCH_DEVICE", "cpu"), threads=len(os.sched_getaffinity(0)))
    b = backends.create(name)
    b.setup(init_params(1), mnist.train_x[:1024], mnist.test_x[:256], config)
    b.warmup()
    for _ in range(3):
        b.lockstep_step(x, eps)  # lockstep_step returns a Python float: the device is synchronised
    benchmark.pedantic(b.lockstep_step, args=(x, eps), rounds=50, iterations=5, warmup_rounds=2)
