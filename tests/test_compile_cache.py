"""Persistent compile caches: a second jax run compiles warm, --cold-compile always cold (harness/execution/caches.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.execution import caches
from tests.conftest import SMALL, harness


def test_classify():
    assert caches.classify("", False, 3, 3) == "none"
    assert caches.classify("jax", True, 5, 5) == "cold"  # forced empty, whatever the counts say
    assert caches.classify("jax", False, 0, 4) == "cold"
    assert caches.classify("jax", False, 4, 6) == "cold"  # at least one program was compiled anew
    assert caches.classify("jax", False, 4, 4) == "warm"
    assert caches.classify("jax", False, 0, 0) == "unknown"  # caching off: nothing found, nothing written
    assert caches.classify("inductor", False, None, 2) == "unknown"


def test_environment_keeps_the_users_settings_unless_cold(tmp_path):
    mine = {"JAX_COMPILATION_CACHE_DIR": "/mine", "TRITON_CACHE_DIR": "/my-triton"}
    warm = caches.environment(tmp_path, False, mine)
    assert warm["JAX_COMPILATION_CACHE_DIR"] == "/mine"
    assert warm["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torchinductor")
    assert warm["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    assert "TRITON_CACHE_DIR" not in warm  # Triton follows Inductor's folder unless the user moved it
    cold = caches.environment(tmp_path, True, mine)
    assert all(v.startswith(str(tmp_path)) for k, v in cold.items() if k.endswith("_DIR") or k.endswith("PATH"))


def test_activated_cold_uses_a_temporary_folder_and_removes_it():
    before = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    with caches.activated(True) as c:
        jax_cache = c.folder("jax")
        assert c.forced_cold and os.environ["JAX_COMPILATION_CACHE_DIR"] == str(jax_cache)
        assert c.folder("inductor") == Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]) and c.folder("") is None
        jax_cache.mkdir(parents=True)
        (jax_cache / "x-cache").write_bytes(b"1")
        assert caches.count_entries(jax_cache) == 1
    assert not jax_cache.exists()
    assert os.environ.get("JAX_COMPILATION_CACHE_DIR") == before


def test_count_entries_ignores_locks_and_access_times(tmp_path):
    for name in ("a-cache", "a-atime", "b.lock", "sub/c.so"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert caches.count_entries(tmp_path) == 2
    assert caches.count_entries(tmp_path / "missing") == 0
    assert caches.count_entries(None) is None


def test_label():
    assert caches.label(26.1, "cold") == "26.10 (cold)"
    assert caches.label(0.0, "none") == "0.00"
    assert caches.label(None, "warm") == "-"


def _run(out: Path, cache: Path, mnist_dir: Path, backends: str, *extra: str) -> dict:
    env = {**os.environ, "VAE_BENCH_CACHE": str(cache)}
    for key in caches.environment(cache, True, {}):  # the test's own settings must not leak in
        env.pop(key, None)
    proc = harness("run", "--backends", backends, "--epochs", "1", "--out", out, "--data-dir", mnist_dir,
                   *SMALL, *extra, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {r["backend"]: r for r in json.loads((out / "results.json").read_text())["results"]}


@pytest.mark.slow
def test_second_jax_run_is_warm_and_cold_compile_is_cold(tmp_path, mnist):
    pytest.importorskip("jax")
    cache = tmp_path / "cache"
    first = _run(tmp_path / "a", cache, mnist.directory, "jax,torch")
    second = _run(tmp_path / "b", cache, mnist.directory, "jax")
    forced = _run(tmp_path / "c", cache, mnist.directory, "jax", "--cold-compile")
    assert (first["jax"]["compile_cache"], second["jax"]["compile_cache"]) == ("cold", "warm")
    assert forced["jax"]["compile_cache"] == "cold"
    assert first["torch"]["compile_cache"] == "none"  # eager torch compiles nothing
    assert any((cache / "compile" / "jax").iterdir())
    # the warm compile skips XLA entirely; generous, since the machine may be busy
    assert second["jax"]["compile_seconds"] < first["jax"]["compile_seconds"]
