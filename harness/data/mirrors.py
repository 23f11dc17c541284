"""MNIST from the canonical download mirrors, skipped within seconds when offline."""
from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request

from harness.data.verify import FILES, check_idx, gunzip, one_line
from harness.errors import HarnessError

# Module constants so tests (and the impatient) can empty or shorten them; they are read here, so
# patch them on this module (harness.data.mirrors), not on harness.data.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MIRROR_TIMEOUT = 3.0  # seconds per socket operation (and per DNS lookup)


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


def download_from_mirrors(tried: list[str]) -> tuple[dict[str, bytes], dict[str, bytes], str] | None:
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
                found[key] = check_idx(gunzip(gz[key], key, url), key, url)
        except (OSError, HarnessError) as e:  # URLError, timeouts and HTTP errors are OSErrors
            tried.append(f"mirror {mirror} ({one_line(e)})")
            continue
        return found, gz, mirror
    return None
