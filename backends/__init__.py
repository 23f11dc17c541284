"""Lazy registry of engines and frameworks: a framework is imported only when its engine is created.

Each framework package (backends/torch/, backends/jax/) declares its engines and its `Framework`;
this module lists them, one line per engine. Listing never imports torch or jax, so the harness
core stays framework-free, and the harness reaches a framework only through this registry.
"""
from __future__ import annotations

import importlib
import importlib.util
import os

from backends import jax as _jax
from backends import torch as _torch
from backends.spec import BackendSpec, CompilerCache, Framework
from harness.errors import HarnessError

__all__ = ["BackendSpec", "CompilerCache", "Framework", "FRAMEWORKS", "REGISTRY", "COMPILE_MODES"]


FRAMEWORKS: dict[str, Framework] = {f.name: f for f in (_torch.FRAMEWORK, _jax.FRAMEWORK)}

# One line per engine; the engine, its options and its framework's modules live in its framework package.
REGISTRY: dict[str, BackendSpec] = {
    "torch": _torch.EAGER,
    "torch-compile": _torch.COMPILE,
    "torch-reference": _torch.REFERENCE,
    "jax": _jax.ENGINE,
}

COMPILE_MODES = REGISTRY["torch-compile"].options["mode"]  # the choices of --compile-mode (harness/cli/flags.py)


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


def register(name: str, spec: BackendSpec, framework: Framework | None = None) -> None:
    """Add an engine (and, for a framework not known yet, its `Framework`); plugin modules call this
    when imported."""
    if framework is not None:
        FRAMEWORKS[framework.name] = framework
    REGISTRY[name] = spec


def framework_of(name: str) -> Framework:
    """The framework record of backend `name` (a bare one, with no modules, if none was registered)."""
    check_names([name])
    spec = REGISTRY[name]
    return FRAMEWORKS.get(spec.framework) or Framework(spec.framework, spec.extra)


def probe_framework() -> Framework | None:
    """The first framework that has a device probe (harness probe), installed or not."""
    _ensure_plugins()
    return next((f for f in FRAMEWORKS.values() if f.probe), None)


def installed(framework: str) -> bool:
    """Whether `framework` can be imported here, without importing it."""
    return importlib.util.find_spec(framework) is not None


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
    spec = _importable(name)
    return getattr(importlib.import_module(spec.module), spec.cls)()


def create_ensemble(name: str):
    """A new instance of the backend's seed-ensemble engine (backends.base.EnsembleBackend)."""
    spec = _importable(name)
    if not spec.ensemble:
        raise HarnessError(f"backend {name!r} has no seed ensemble: it trains one seed per process")
    module, cls = spec.ensemble.split(":")
    return getattr(importlib.import_module(module), cls)()


def _importable(name: str) -> BackendSpec:
    """The spec of a known backend whose framework imports; one error line otherwise."""
    check_names([name])
    spec = REGISTRY[name]
    try:
        importlib.import_module(spec.framework)
    except ImportError as exc:
        raise HarnessError(
            f"backend {name!r} needs {spec.framework}, which is not installed ({exc}); "
            f"install it with: pip install -e '.[{spec.extra}]'") from None
    return spec
