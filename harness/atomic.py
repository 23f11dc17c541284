"""Atomic file writes: a temporary file in the target's folder, fsync, then rename.

A kill at any moment leaves either the old file or the new one, never a half-written file; results,
checkpoints, the data cache and reports are all written through here.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def ensure_writable_dir(path: Path, label: str) -> None:
    """Create `path` if needed and prove a file can be written there, before any work starts."""
    from harness.errors import HarnessError
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_text(path / ".write-test", "")
        (path / ".write-test").unlink()
    except OSError as exc:
        raise HarnessError(f"cannot write to {label} {path}: {exc.strerror or exc}") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, allow_nan=True) + "\n")


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())
