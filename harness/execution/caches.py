"""The frameworks' persistent compile caches: where they live, how to start from empty ones, and
whether a job's compile found its programs there.

By default every job shares caches under the vae-bench cache folder (`<cache_dir()>/compile`), so a
second process reuses what the first compiled. Which caches, and the variables that point each
compiler at its folder, each framework package declares (`Framework.caches` in the registry: jax's
persistent compilation cache in backends/jax/, torch Inductor's FX-graph, AOTAutograd and Triton
caches in backends/torch/). Settings the user exported win over these defaults. `--cold-compile`
gives each job a fresh, empty folder instead, removed when the job ends, so its compile time is the
cold figure.

The worker counts the entries of the backend's cache before and after its warm-up:
- "cold": the warm-up wrote entries (it compiled at least one program), or the caches were forced empty;
- "warm": the cache held entries and the warm-up added none, so every program came from it;
- "unknown": neither (e.g. the user's settings turned caching off, or the folder is unreadable);
- "none": the backend compiles nothing.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import backends
from backends.spec import CompilerCache

STATES = ("cold", "warm", "unknown", "none")
# Files that a cache hit may create or touch without adding a program: locks and access times.
_NOT_ENTRIES = (".lock", "-atime", ".tmp")


@dataclass(frozen=True)
class CompileCaches:
    """The cache folders one job uses, by compiler name, and whether they were made empty for it."""

    folders: dict[str, Path]
    forced_cold: bool

    def folder(self, compiler: str) -> Path | None:
        """The folder of a backend's compiler (BackendSpec.compiler); None for one that compiles nothing."""
        return self.folders.get(compiler)


def compilers() -> list[CompilerCache]:
    """Every registered framework's compile caches."""
    return [c for framework in backends.FRAMEWORKS.values() for c in framework.caches]


def default_root() -> Path:
    """<vae-bench cache folder>/compile: shared by every run on this machine."""
    from harness.data import cache_dir
    return cache_dir() / "compile"


def environment(root: Path, cold: bool, current: Mapping[str, str]) -> dict[str, str]:
    """The variables that point every framework's compilers at caches under `root`.

    Warm (the default): what `current` already sets is kept, so a user's own cache settings win.
    Cold: `root` is a fresh folder, so everything is overridden, the kernel caches of the compilers
    (e.g. Triton's) and the CUDA driver's included (otherwise they would keep serving compiled kernels).
    """
    values: dict[str, str] = {}
    for c in compilers():
        values[c.variable] = str(root / c.folder)
        values.update(c.settings)
    if cold:
        for c in compilers():
            values.update({variable: str(root / folder) for variable, folder in c.cold.items()})
        values["CUDA_CACHE_PATH"] = str(root / "cuda")
        return values
    return {k: current.get(k) or v for k, v in values.items()}


def from_environment(env: Mapping[str, str], cold: bool) -> CompileCaches:
    """The folders the compilers will use under `env` (as set by `environment`)."""
    return CompileCaches({c.name: Path(env[c.variable]) for c in compilers()}, forced_cold=cold)


@contextlib.contextmanager
def activated(cold: bool, root: Path | None = None) -> Iterator[CompileCaches]:
    """Set this process's environment for the caches (before any framework is imported).

    With `cold`, the caches live in a new temporary folder that is deleted on exit.
    """
    tmp = tempfile.mkdtemp(prefix="vae-bench-cold-compile-") if cold else None
    env = environment(Path(tmp) if tmp else (root or default_root()), cold, os.environ)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield from_environment(env, cold)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def count_entries(folder: Path | None) -> int | None:
    """Files in a cache folder, lock and access-time files left out; 0 for a missing folder, None if
    it cannot be read."""
    if folder is None:
        return None
    if not folder.exists():
        return 0
    try:
        return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.endswith(_NOT_ENTRIES))
    except OSError:
        return None


def classify(compiler: str, forced_cold: bool, before: int | None, after: int | None) -> str:
    """cold / warm / unknown / none from the entry counts around a warm-up (see the module docstring)."""
    if not compiler:
        return "none"
    if forced_cold:
        return "cold"
    if before is None or after is None:
        return "unknown"
    if after > before:
        return "cold"
    return "warm" if before > 0 else "unknown"


def label(seconds: float | None, state: str | None, spec: str = ".2f") -> str:
    """Compile seconds for tables, with the cache state where it says something: '26.10 (cold)'."""
    if seconds is None:
        return "-"
    text = format(seconds, spec)
    return f"{text} ({state})" if state in ("cold", "warm") else text
