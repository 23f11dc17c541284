"""Lazy registry of backends: a backend's framework is imported only when that backend is created.

Listing the names never imports torch or jax, so the harness core stays framework-free.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

from harness.errors import HarnessError


@dataclass(frozen=True)
class BackendSpec:
    """Where a backend lives and what it needs installed."""

    module: str
    cls: str
    framework: str  # top-level module that must import
    extra: str      # the pip extra that installs it
    description: str
    compiler: str = ""  # whose persistent compile cache its warm-up uses: "jax", "inductor" or "" (none)
    # The engine's own options (RunConfig.engine_options[name]): option -> allowed values, default first.
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)


JAX_EPOCHS = ("auto", "scan", "loop")  # the jax engine's epoch: see backends/jax_flax.py epoch_arrangement
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
DENORMALS = ("flush", "keep")  # torch/torch-compile on the CPU: see backends/torch_common.py set_denormals

REGISTRY: dict[str, BackendSpec] = {
    "torch": BackendSpec("backends.torch_eager", "TorchEagerBackend", "torch", "torch",
                         "PyTorch eager, data on the device, loss accumulated on the device",
                         options={"denormals": DENORMALS}),
    "torch-compile": BackendSpec("backends.torch_compile", "TorchCompileBackend", "torch", "torch",
                                 "torch.compile; on CUDA the whole step replayed as one CUDA graph (arrangement per device and mode in backend_info)", compiler="inductor",
                                 options={"mode": COMPILE_MODES, "denormals": DENORMALS}),
    "torch-reference": BackendSpec("backends.torch_reference", "TorchReferenceBackend", "torch", "torch",
                                   "the pytorch/examples vae/main.py loop as users know it"),
    "jax": BackendSpec("backends.jax_flax", "JaxBackend", "jax", "jax",
                       "Flax NNX + Optax adam, jitted lax.scan epoch (or loop of jitted steps) with donated state",
                       compiler="jax", options={"epoch": JAX_EPOCHS}),
}


def check_options(engine_options: dict[str, dict]) -> None:
    """Fail with one line on an option an engine does not declare, or a value it does not allow."""
    for name, given in engine_options.items():
        check_names([name])
        declared = REGISTRY[name].options
        for option, value in given.items():
            if option not in declared:
                raise HarnessError(f"backend {name!r} has no option {option!r}"
                                   + (f"; its options: {', '.join(declared)}" if declared else ""))
            if value not in declared[option]:
                raise HarnessError(f"{name} {option} {value!r}: choose from {', '.join(declared[option])}")


def register(name: str, spec: BackendSpec) -> None:
    """Add a backend; plugin modules call this when imported."""
    REGISTRY[name] = spec


def load_plugins() -> None:
    """Import the modules named in VAE_BENCH_PLUGINS (comma-separated): how extra backends, such as the
    tests' deliberately broken ones, reach the child processes too (they inherit the environment)."""
    for module in filter(None, os.environ.get("VAE_BENCH_PLUGINS", "").split(",")):
        try:
            importlib.import_module(module.strip())
        except ImportError as exc:
            raise HarnessError(f"VAE_BENCH_PLUGINS: cannot import {module!r}: {exc}") from None


load_plugins_pending = True


def known() -> list[str]:
    _ensure_plugins()
    return list(REGISTRY)


def check_names(names: list[str]) -> None:
    """Fail with one line listing the known backends when a name is unknown."""
    _ensure_plugins()
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise HarnessError(f"unknown backend {', '.join(map(repr, unknown))}; known backends: {', '.join(known())}")


def frameworks(names) -> list[str]:
    """The frameworks the backends `names` import, each once, in order (names must be known)."""
    check_names(list(names))
    return list(dict.fromkeys(REGISTRY[n].framework for n in names))


def _ensure_plugins() -> None:
    global load_plugins_pending
    if load_plugins_pending:
        load_plugins_pending = False
        load_plugins()


def create(name: str):
    """Import the backend's module (and so its framework) and return a new instance."""
    check_names([name])
    spec = REGISTRY[name]
    try:
        importlib.import_module(spec.framework)
    except ImportError as exc:
        raise HarnessError(
            f"backend {name!r} needs {spec.framework}, which is not installed ({exc}); "
            f"install it with: pip install -e '.[{spec.extra}]'") from None
    module = importlib.import_module(spec.module)
    return getattr(module, spec.cls)()
