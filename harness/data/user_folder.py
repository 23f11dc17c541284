"""MNIST from a folder the user names: the four IDX files, plain or .gz, or torchvision's MNIST/raw/.

The folder is read only, never written.
"""
from __future__ import annotations

from pathlib import Path

from harness.data.verify import FILES, read_verified
from harness.errors import HarnessError


def _find_file(folder: Path, key: str) -> Path | None:
    for suffix in ("", ".gz"):  # plain first: no decompression needed
        path = folder / (FILES[key][0] + suffix)
        if path.is_file():
            return path
    return None


def read_folder(folder: Path) -> tuple[Path, dict[str, bytes]]:
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
    return chosen, {key: read_verified(path, key) for key, path in paths.items() if path}
