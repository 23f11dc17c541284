"""The MNIST cache, `<cache_dir()>/mnist/`: the four standard .gz files, written only by this package."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

from harness import atomic
from harness.data.verify import FILES, read_verified
from harness.errors import HarnessError


def cache_dir() -> Path:
    """$VAE_BENCH_CACHE or ~/.cache/vae-bench; the MNIST files live in its mnist/ subfolder."""
    env = os.environ.get("VAE_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vae-bench"


def _cache_paths() -> dict[str, Path]:
    folder = cache_dir() / "mnist"
    return {key: folder / f"{name}.gz" for key, (name, _, _) in FILES.items()}


def read_cache() -> tuple[dict[str, bytes] | None, str]:
    """(verified bytes, "") if the cache is good, else (None, why not)."""
    paths = _cache_paths()
    present = [p for p in paths.values() if p.exists()]
    if not present:
        return None, "empty"
    if len(present) < len(paths):
        missing = [p.name for p in paths.values() if not p.exists()]
        return None, f"incomplete, missing {', '.join(missing)}"
    try:
        return {key: read_verified(path, key) for key, path in paths.items()}, ""
    except HarnessError as e:
        return None, f"corrupt: {str(e).removeprefix('data: ')}"


def write_cache(found: dict[str, bytes], gz: dict[str, bytes] | None = None) -> None:
    """Write the verified bytes into the cache as .gz, each file atomically."""
    gz = gz or {}
    try:
        for key, path in _cache_paths().items():
            # mtime=0 keeps the .gz reproducible; level 6 compresses MNIST well in about a second.
            atomic.write_bytes(path, gz.get(key) or gzip.compress(found[key], compresslevel=6, mtime=0))
    except OSError as e:
        raise HarnessError(f"data: cannot write the MNIST cache {cache_dir() / 'mnist'} ({e}); "
                           f"set VAE_BENCH_CACHE to a writable folder") from None
