"""The probe on the CPU, through the one child launcher (backends/torch/probe.py, harness/execution/probe.py,
`harness probe`): the run's own batch size, workload and precision; the workloads' FLOPs against torch's
FlopCounterMode; and a short run of the four backends, none below its roofline. Timings are only checked
to exist, except that ratio."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from harness.config import ModelConfig, RunConfig  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.execution import probe  # noqa: E402
from harness.measurement import results, roofline  # noqa: E402
from tests.conftest import assert_one_line_error, harness  # noqa: E402

SMALL = 1280  # 10 batches of 128, 3 of 512 (2 x 512 + 256)


def test_a_batch_512_run_is_probed_at_batch_512():
    m = ModelConfig(batch_size=512)
    out = probe.run(RunConfig(threads=1, train_limit=SMALL, model=m), repeats=1)
    assert out["batch_size"] == 512 and out["floor_batches"] == 3  # the products reference at the run's batches
    assert out["bandwidth_working_set_bytes"] == m.spec().bandwidth_working_set(m, 512)
    assert out["bandwidth_gbps"] == max(out["bandwidth_working_set_gbps"], out["bandwidth_large_gbps"]) > 0
    assert out["peak_gflops"] > 0 and "STREAM" in out["bandwidth_method"] and "torch.mm" in out["peak_method"]
    products = 1280 * 3_280_000 / out["floor_seconds_per_epoch"] / 1e9
    assert out["peak_gflops"] >= products  # the products' own rate is a candidate peak
    assert "peak_gflops_bf16" not in out and "kernel_seconds" not in out  # float32 on a CPU


def test_a_conv_bf16_probe_has_its_own_peak_and_no_products(tmp_path):
    path = tmp_path / "probe.json"
    proc = harness("probe", "--workload", "conv-vae", "--bf16", "--threads", "1", "--repeats", "1",
                   "--train-limit", str(SMALL), "--json", path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(path.read_text())
    assert out["workload"] == "conv-vae" and out["peak_gflops_bf16"] > 0 and out["bandwidth_gbps"] > 0
    assert "floor_seconds_per_epoch" not in out and "conv-vae" in out["floor_note"]
    text = " ".join(proc.stdout.split())
    assert "bf16 matrix peak" in text and "roofline of one conv-vae epoch (10 steps of batch 128, bf16)" in text


def test_bad_probe_requests_are_one_error_line():
    assert_one_line_error(harness("probe", "--bf16", "--allow-tf32"), "one at a time")
    assert_one_line_error(harness("probe", "--count-kernels", "jax"), "needs --device cuda")
    assert_one_line_error(harness("probe", "--batch-size", "0"), "--batch-size")


def test_a_failing_probe_child_is_one_error_line():
    """Bypassing the device check: the child's own error comes back as the launcher's one line."""
    with pytest.raises(HarnessError, match=r"^probe on cuda failed: backends.torch.probe: \w+Error: .*CUDA") as info:
        probe.run(RunConfig(device="cuda", threads=1, train_limit=SMALL), repeats=1)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("workload", ["mlp-vae", "conv-vae"])
def test_step_flops_match_torch_flop_counter(workload):
    """FlopCounterMode counts the products and convolutions of the real model's forward and backward
    at the run's batch size (x needs no gradient, as in training); Adam's elementwise FLOPs are ours."""
    from torch.utils.flop_counter import FlopCounterMode
    m = ModelConfig(workload=workload, batch_size=512)
    model = m.spec().module("torch_model").Model(m)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((512, 784), dtype=np.float32))
    eps = torch.from_numpy(rng.standard_normal((512, m.latent_dim), dtype=np.float32))
    with FlopCounterMode(display=False) as counter:
        logits, mu, logvar = model(x, eps)
        (logits.sum() + mu.sum() + logvar.sum()).backward()
    adam = 13 * sum(p.numel() for p in model.parameters())
    assert counter.get_total_flops() == m.spec().step_flops(m, 512) - adam


@pytest.mark.slow
def test_no_backend_beats_the_roofline_on_a_short_cpu_run(tmp_path, mnist):
    """The ratio property: with both ceilings measured, x roofline >= 1 for every backend."""
    out = tmp_path / "run"
    proc = harness("run", "--backends", "torch-reference,torch,torch-compile,jax", "--device", "cpu",
                   "--epochs", "2", "--threads", "2", "--train-limit", str(SMALL), "--test-limit", "256",
                   "--no-report", "--out", out, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = results.load(out)
    assert record.probe["bandwidth_gbps"] > 0 and roofline.problem(record) is None
    for r in record.results:
        assert r.summary["roofline_kind"] == "roofline"
        assert r.summary["roofline_multiple"] >= 1, (r.backend, r.summary)
        assert 0 < r.summary["fraction_of_peak"] <= 1, (r.backend, r.summary)
