"""What the registry knows of an engine and of a framework, without importing either.

Each framework package (`backends/torch/`, `backends/jax/`) declares a `Framework` and its engines'
`BackendSpec`s in its `__init__.py`, which imports no framework; `backends/__init__.py` lists them.
The harness reads frameworks only through these records: the module that answers `--device auto`,
the compile caches a job uses, the IWAE evaluator, the probe and the version info.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackendSpec:
    """Where an engine lives and what it needs installed."""

    module: str
    cls: str
    framework: str  # top-level module that must import (a key of backends.FRAMEWORKS, when known there)
    extra: str      # the pip extra that installs it
    description: str
    compiler: str = ""  # whose persistent compile cache its warm-up uses: a CompilerCache.name, or "" (none)
    # The engine's own options (RunConfig.engine_options[name]): option -> allowed values, default first.
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Its seed-ensemble engine (backends.base.EnsembleBackend) as "module:Class", or "" (none: one seed
    # per process, as torch-reference).
    ensemble: str = ""


@dataclass(frozen=True)
class CompilerCache:
    """One compiler's persistent cache under the shared compile-cache root (harness/execution/caches.py)."""

    name: str      # what BackendSpec.compiler names
    folder: str    # its sub-folder of the root
    variable: str  # the environment variable the compiler reads that folder from
    settings: dict[str, str] = field(default_factory=dict)  # further variables, e.g. turning the cache on
    cold: dict[str, str] = field(default_factory=dict)  # variable -> sub-folder, set only for --cold-compile


@dataclass(frozen=True)
class Framework:
    """A framework's modules, each run or imported only in a child that may import the framework."""

    name: str   # the top-level module (`import name`)
    extra: str  # the pip extra that installs it
    gpu_check: str = ""  # `python -m MODULE` prints one JSON line: version, cuda (None: CPU build), gpus
    iwae: str = ""       # `python -m MODULE JSON`: harness evaluate's child (backends/iwae_child.py)
    probe: str = ""      # `python -m MODULE JSON`: harness probe's child (harness/execution/probe.py)
    info: str = ""       # a module with `versions() -> dict`, read by backends/info.py once imported
    caches: tuple[CompilerCache, ...] = ()
