"""backends/torch/precision.py: TF32 through the one torch API the installed torch offers (issue 27),
checked on the CPU with the installed torch. The CUDA effect of the settings needs a GPU."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT

torch = pytest.importorskip("torch")

from backends.torch import precision as torch_precision  # noqa: E402


def in_child(code: str) -> dict:
    """Run `code` (which prints one JSON line last) in a fresh process: torch's settings are process state."""
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_api_is_picked_by_what_torch_has():
    has_new = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 9)
    assert torch_precision.tf32_api() == (torch_precision.NEW_API if has_new else torch_precision.OLD_API)
    old = SimpleNamespace(cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=False)),
                          cudnn=SimpleNamespace(allow_tf32=False), mkldnn=SimpleNamespace())
    assert torch_precision.tf32_api(old) == torch_precision.OLD_API
    half = SimpleNamespace(cuda=SimpleNamespace(matmul=SimpleNamespace(fp32_precision="ieee")),
                           cudnn=SimpleNamespace(conv=SimpleNamespace(fp32_precision="ieee")))
    assert torch_precision.tf32_api(half) == torch_precision.OLD_API  # every setting or none


@pytest.mark.skipif(torch_precision.tf32_api() != torch_precision.NEW_API, reason="torch < 2.9: old API only")
def test_new_api_on_and_off_and_the_record_never_mixes():
    """Setting, reading and recording (framework_info) raise nothing, warnings being errors: the old
    getters, which raise after the new setters, are never read."""
    out = in_child(
        "import json, torch\n"
        "from backends.torch import precision as tp\n"
        "from backends.info import framework_info\n"
        "from harness.config import RunConfig\n"
        "on = (tp.set_tf32(True), tp.settings(), tp.tf32_enabled())\n"
        "off = (tp.set_tf32(False), tp.settings(), tp.tf32_enabled())\n"
        "info = framework_info('torch', RunConfig())\n"
        "print(json.dumps({'on': on, 'off': off,\n"
        "                  'info': {k: info.get(k) for k in ('tf32_api', 'fp32_precision', 'matmul_precision')}}))")
    new = torch_precision.NEW_API
    assert out["on"][0] == new and set(out["on"][1]["fp32_precision"].values()) == {"tf32"} and out["on"][2] is True
    assert out["off"][0] == new and set(out["off"][1]["fp32_precision"].values()) == {"ieee"} and out["off"][2] is False
    assert out["on"][1]["matmul_precision"] == "high"
    assert out["info"] == {"tf32_api": new, "fp32_precision": out["off"][1]["fp32_precision"],
                           "matmul_precision": "highest"}


@pytest.mark.skipif(torch_precision.tf32_api() != torch_precision.NEW_API, reason="torch < 2.9: old API only")
def test_float32_settings_equal_the_old_calls_on_the_matmul_backends():
    """The new API's float32 settings are those the old calls left (so the CPU computes the same bits)."""
    read = ("import json, torch\nb = torch.backends\nx = torch.linspace(-1, 1, 400 * 300).reshape(400, 300)\n"
            "print(json.dumps({'cuda': b.cuda.matmul.fp32_precision, 'mkldnn': b.mkldnn.matmul.fp32_precision, "
            "'product': (x @ x.T).numpy().tobytes().hex()}))")
    old = in_child("import torch\ntorch.set_float32_matmul_precision('highest')\n"
                   "torch.backends.cuda.matmul.allow_tf32 = False\n" + read)
    new = in_child("from backends.torch import precision as torch_precision\ntorch_precision.set_tf32(False)\n" + read)
    assert old == new and new["cuda"] == new["mkldnn"] == "ieee"
