"""The harness's own GPU paths, on a real GPU (skipped without one; benchmarks/gpu_check.sh runs them):
the probe's CUDA ceilings (graph replay, kernel cost, kernel count), and `--device auto` choosing cuda
with CUDA builds installed. None of the probe's CUDA paths has run on a GPU yet."""
from __future__ import annotations

import importlib.util

import pytest

from harness.execution import devices

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _job(config, count=()):
    from harness.execution.probe import job_of
    return job_of(config, 2, count)


def test_probe_replays_the_epoch_as_a_cuda_graph_and_probes_tf32():
    from backends.torch import probe as probe_torch
    from harness.config import ModelConfig, RunConfig
    out = probe_torch.probe(_job(RunConfig(device="cuda", threads=1, precision="tf32")))
    assert out["floor_method"] == "cuda-graph replay"
    assert out["floor_seconds_per_epoch"] > 0 and out["floor_seconds_per_epoch_tf32"] > 0
    assert out["peak_gflops_tf32"] > 0 and out["bandwidth_gbps"] > 0 and 0 < out["kernel_seconds"] < 1e-3
    from backends.torch import precision as torch_precision
    assert not torch_precision.tf32_enabled()  # the probe leaves float32 as it found it

    m, device = ModelConfig(), torch.device("cuda")
    batch_sizes = m.batch_sizes(60_000)
    products = {B: probe_torch.importlib.import_module("workloads.mlp_vae").train_products(m, B) for B in {128, 96}}
    loop = probe_torch._best_of(probe_torch.epoch_products(products, batch_sizes, device), device, 2)
    assert out["floor_seconds_per_epoch"] < loop  # launches excluded: replay beats issuing one by one


def test_the_probe_counts_kernels_per_step():
    """The latency floor's count: every engine issues at least one device operation per step."""
    from backends.torch import probe as probe_torch
    from harness.config import RunConfig
    engines = ("torch", "torch-compile") + (("jax",) if importlib.util.find_spec("jax") else ())
    out = probe_torch.probe(_job(RunConfig(device="cuda", threads=1), engines))
    assert set(out["kernels_per_step"]) == set(engines)
    assert all(n >= 1 for n in out["kernels_per_step"].values()), out["kernels_per_step"]


def test_graph_replay_computes_the_products():
    from backends.torch import probe as probe_torch
    device = torch.device("cuda")
    a, b = torch.randn(128, 784, device=device), torch.randn(784, 400, device=device)
    c = torch.empty(128, 400, device=device)
    replay = probe_torch.as_cuda_graph(lambda: torch.mm(a, b, out=c), device)
    c.zero_()
    replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(c, a @ b)


def test_auto_picks_cuda_with_cuda_builds():
    frameworks = ["torch"] + (["jax"] if importlib.util.find_spec("jax") else [])
    devices.framework_support.cache_clear()
    resolution = devices.resolve("auto", frameworks)
    assert resolution.device == "cuda", resolution.reason
