"""The standard MNIST files (names, MD5s, shapes) and the checks that bytes are exactly those files.

Every source goes through `check_idx`, so all of them give bit-identical data.
"""
from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from harness.data.idx import parse_idx
from harness.errors import HarnessError

# logical name -> (standard file name, md5 of the uncompressed IDX bytes, shape)
FILES: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "train_images": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", (60000, 28, 28)),
    "train_labels": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", (60000,)),
    "test_images": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", (10000, 28, 28)),
    "test_labels": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", (10000,)),
}


def check_idx(raw: bytes, key: str, path: Path | str) -> bytes:
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


def read_verified(path: Path, key: str) -> bytes:
    """The verified, uncompressed IDX bytes of a plain or .gz file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise HarnessError(f"data: {path}: cannot read ({e.strerror or e})") from None
    return check_idx(gunzip(raw, key, path) if path.suffix == ".gz" else raw, key, path)


def gunzip(blob: bytes, key: str, where: Path | str) -> bytes:
    """Decompress the gzip of MNIST file `key`; HarnessError naming `where` if it is not valid gzip."""
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:
        raise HarnessError(f"data: {where}: not a valid gzip file ({one_line(e)}); expected gzip of "
                           f"{FILES[key][0]}") from None


def one_line(e: BaseException) -> str:
    """An exception's message on one line, without the "data: " prefix, to quote inside another message."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text.removeprefix("data: ")
