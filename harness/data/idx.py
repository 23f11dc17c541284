"""The IDX file format of MNIST: parse its bytes into an array, and encode an array as IDX bytes."""
from __future__ import annotations

import numpy as np

from harness.errors import HarnessError

# IDX type byte <-> big-endian numpy dtype (the IDX format is big-endian throughout).
_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


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
