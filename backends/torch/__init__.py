"""PyTorch: its engines (torch, torch-compile, torch-reference), their options, and everything else
the harness asks of torch (GPU check, Inductor's compile cache, versions, IWAE evaluator, probe).

Importing this package does not import torch: it only declares where those things live, for the
registry (backends/__init__.py). The modules beside it import torch and run in child processes.
"""
from __future__ import annotations

from backends.spec import BackendSpec, CompilerCache, Framework

FRAMEWORK = Framework(
    "torch", "torch", gpu_check="backends.torch.gpu_check", iwae="backends.torch.iwae",
    probe="backends.torch.probe", info="backends.torch.info",
    caches=(CompilerCache("inductor", "torchinductor", "TORCHINDUCTOR_CACHE_DIR",
                          {"TORCHINDUCTOR_FX_GRAPH_CACHE": "1", "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"},
                          # Triton follows Inductor's folder unless moved; cold runs move it explicitly
                          cold={"TRITON_CACHE_DIR": "torchinductor/triton"}),))

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
DENORMALS = ("flush", "keep")  # on the CPU: see backends/torch/common.py set_denormals
# How a seed ensemble (--ensemble) arranges its members: see backends/torch/ensemble_members.py
# member_arrangement. The single-seed engines share the options and ignore this one.
MEMBERS = ("auto", "vmap", "sequential")

EAGER = BackendSpec("backends.torch.eager", "TorchEagerBackend", "torch", "torch",
                    "PyTorch eager, data on the device, loss accumulated on the device",
                    options={"denormals": DENORMALS, "members": MEMBERS},
                    ensemble="backends.torch.ensemble:TorchEnsemble")
COMPILE = BackendSpec("backends.torch.compile", "TorchCompileBackend", "torch", "torch",
                      "torch.compile; on CUDA the whole step replayed as one CUDA graph (arrangement per "
                      "device and mode in backend_info)", compiler="inductor",
                      options={"mode": COMPILE_MODES, "denormals": DENORMALS, "members": MEMBERS},
                      ensemble="backends.torch.ensemble_compile:TorchCompileEnsemble")
REFERENCE = BackendSpec("backends.torch.reference", "TorchReferenceBackend", "torch", "torch",
                        "the pytorch/examples vae/main.py loop as users know it")
