"""The harness's device-reproducible noise, defined once in NumPy (the host reference).

Why counter-based: every value is a pure function of (seed, epoch, stream, element index), so any
member of a seed ensemble, any slice of an epoch (rows i..j) and any device can generate exactly its
own part without drawing, or skipping over, anything before it. `backends/torch/counter_noise.py`
and `backends/jax/counter_noise.py` write the same definition in torch and jax;
`tests/test_counter_noise.py` holds them to this module (the words bit for bit, the normals to the
measured ulp bound) and this module to the published known answers.

The definition, NOISE_DEFINITION = "philox4x32-10/box-muller-f32/v1":

- Generator: Philox4x32-10 (J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel random
  numbers: as easy as 1, 2, 3", SC'11, doi:10.1145/2063384.2063405): multipliers M0 = 0xD2511F53,
  M1 = 0xCD9E8D57, Weyl key increments W0 = 0x9E3779B9, W1 = 0xBB67AE85, 10 rounds. Checked against
  the Random123 known-answer vectors (the kat_vectors file of the Random123 distribution, as quoted
  in DEShawResearch/fs123, core123/ut/ut_philox.cpp, test_kat_philox4x32).
- Key: (seed, KEY_TAG); KEY_TAG = 0x0015E, the domain number the NumPy-drawn `epoch_noise` uses, so
  this stream cannot coincide with another Philox keyed by the seed alone.
- Counter of block b: (b mod 2**32, b div 2**32, epoch, stream). Element e of the flattened
  (rows, latent) noise of an (epoch, stream) is word e mod 4 of block e div 4 after the transform.
- Transform, float32, from +, -, *, / and bit operations alone, each rounded once, in this order
  (no libm: the frameworks' float32 log, sin, cos and even torch's CPU sqrt differ from NumPy's by up
  to 3 ulp, measured on this machine's AVX-512 CPU). Per block (x0, x1, x2, x3), with m_k = x_k >> 9:
  u0 = (m0 + 1/2) 2**-23 in (0, 1); L = ln(u0) by `_log_u` (v = 2 m0 + 1 split as f 2**e, f in
  (sqrt(1/2), sqrt(2)], ln f = 2 atanh((f - 1) / (f + 1)) as an odd polynomial to s**11, plus
  (e - 24) ln 2 with ln 2 split in Cephes' two parts); r = `_sqrt`(-2 L) (three Newton steps on
  1/sqrt from the 0x5F3759DF guess); the angle (m1 + 1/2) 2**-23 turns is split exactly into its
  quadrant q = m1 >> 21 and the offset a = (j + 1/2) 2**-21, j = m1 & (2**21 - 1), so that
  sin and cos are +-S(a) and +-S(1 - a) with S(a) = sin(pi a / 2) as a Taylor polynomial to a**13;
  (z0, z1) = (r cos, r sin); likewise (z2, z3) from (x2, x3). Against float64 Box-Muller of the same
  words the result is within 1.2e-6 absolute (measured over 4 * 10**6 values); |z| <= 5.77.
"""
from __future__ import annotations

import numpy as np

NOISE_DEFINITION = "philox4x32-10/box-muller-f32/v1"

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
KEY_TAG = 0x0015E
STREAM_REPARAM = 0  # the reparameterisation noise of an epoch (epoch 0: the sampled test loss)
STREAM_IWAE = 1  # the K draws of the IWAE bound
SQRT2 = np.float32(1.4142135381698608)
LN2_HI, LN2_LO = np.float32(0.693359375), np.float32(-0.00021219444170128554)  # Cephes' split of ln 2
LOG_POLY = tuple(np.float32(c) for c in (2.0, 0.6666666865348816, 0.4000000059604645,
                                         0.2857142984867096, 0.2222222238779068, 0.1818181872367859))
SIN_POLY = tuple(np.float32(c) for c in (1.5707963705062866, -0.6459640860557556, 0.07969262450933456,
                                         -0.004681753925979137, 0.00016044118092395365,
                                         -3.598843250074424e-06, 5.6921727775716136e-08))
QUARTER_SCALE = np.float32(2.0 ** -21)
_MASK32 = 0xFFFFFFFF


def mulhilo32(a: int, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 32-bit halves of a * b for a uint32 constant and a uint32 array (exact in uint64)."""
    product = np.uint64(a) * b.astype(np.uint64)
    return (product >> np.uint64(32)).astype(np.uint32), (product & np.uint64(_MASK32)).astype(np.uint32)


def philox4x32(counter: np.ndarray, key: tuple[int, int], rounds: int = ROUNDS) -> np.ndarray:
    """Philox4x32-`rounds` of counters (4, n) uint32 under key (k0, k1); returns (4, n) uint32."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint32) for c in counter)
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for r in range(rounds):
        if r:  # the key schedule: a Weyl sequence, bumped before every round but the first
            k0, k1 = (k0 + W0) & _MASK32, (k1 + W1) & _MASK32
        hi0, lo0 = mulhilo32(M0, c0)
        hi1, lo1 = mulhilo32(M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint32(k0), lo1, hi0 ^ c3 ^ np.uint32(k1), lo0
    return np.stack([c0, c1, c2, c3])


def check_args(seed: int, epoch: int, stream: int, start: int, count: int, latent: int) -> None:
    """Raise ValueError (one line) unless every argument is an integer in the definition's range."""
    for name, value, top in (("seed", seed, 2**32), ("epoch", epoch, 2**32), ("stream", stream, 2**32),
                             ("start", start, 2**62), ("count", count, 2**62), ("latent", latent, 2**31)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < top:
            raise ValueError(f"counter noise: {name} must be an integer in [0, 2**{top.bit_length() - 1}), "
                             f"got {value!r}")
    if latent == 0:
        raise ValueError("counter noise: latent must be at least 1")
    if (start + count) * latent >= 2**64:
        raise ValueError("counter noise: the element index (start + count) * latent must stay below 2**64")


def block_words(seed: int, epoch: int, stream: int, first_block: int, n_blocks: int) -> np.ndarray:
    """The raw words of blocks first_block .. first_block + n_blocks - 1, shape (n_blocks, 4) uint32."""
    blocks = np.uint64(first_block) + np.arange(n_blocks, dtype=np.uint64)
    counter = np.stack([(blocks & np.uint64(_MASK32)).astype(np.uint32),
                        (blocks >> np.uint64(32)).astype(np.uint32),
                        np.full(n_blocks, epoch, dtype=np.uint32),
                        np.full(n_blocks, stream, dtype=np.uint32)])
    return philox4x32(counter, (seed, KEY_TAG)).T


def _log_u(m: np.ndarray) -> np.ndarray:
    """ln((m + 1/2) 2**-23) in float32 for 23-bit integers m, from +, -, *, / alone (fixed order)."""
    v = (m * np.uint32(2) + np.uint32(1)).astype(np.float32)  # an odd integer < 2**24: exact
    bits = v.view(np.int32)
    e = (bits >> 23) - 127
    f = ((bits & 0x7FFFFF) | 0x3F800000).view(np.float32)  # v = f 2**e, f in [1, 2)
    big = f > SQRT2
    f = np.where(big, f * np.float32(0.5), f)  # f in (sqrt(1/2), sqrt(2)]
    e = e + big.astype(np.int32)
    s = (f - np.float32(1.0)) / (f + np.float32(1.0))  # ln f = 2 atanh(s), |s| < 0.172
    s2 = s * s
    p = LOG_POLY[-1]
    for c in LOG_POLY[-2::-1]:
        p = p * s2 + c
    big_e = (e - 24).astype(np.float32)  # ln(v 2**-24) = (e - 24) ln 2 + ln f
    return (big_e * LN2_LO + s * p) + big_e * LN2_HI


def _sin_quarter(a: np.ndarray) -> np.ndarray:
    """sin(pi a / 2) in float32 for a in (0, 1): a Taylor polynomial to a**13."""
    a2 = a * a
    p = SIN_POLY[-1]
    for c in SIN_POLY[-2::-1]:
        p = p * a2 + c
    return a * p


def _sqrt(x: np.ndarray) -> np.ndarray:
    """sqrt(x) for x > 0 in float32 by three Newton steps on 1/sqrt (libm-free: torch's CPU sqrt is not
    correctly rounded on every machine)."""
    y = (np.int32(0x5F3759DF) - (x.view(np.int32) >> 1)).view(np.float32)  # within 3.5%
    h = np.float32(0.5) * x
    for _ in range(3):
        y = y * (np.float32(1.5) - (h * y) * y)
    return x * y


def words_to_normals(words: np.ndarray) -> np.ndarray:
    """The fixed float32 Box-Muller transform of words (n, 4) uint32 to normals (n, 4) float32."""
    m = words >> np.uint32(9)
    r = _sqrt(np.float32(-2.0) * _log_u(m[:, 0::2]))
    quadrant = m[:, 1::2] >> np.uint32(21)
    j = m[:, 1::2] & np.uint32(0x1FFFFF)
    sa = _sin_quarter((j.astype(np.float32) + np.float32(0.5)) * QUARTER_SCALE)  # sin of the offset
    sb = _sin_quarter(((np.uint32(0x1FFFFF) - j).astype(np.float32) + np.float32(0.5)) * QUARTER_SCALE)
    sin = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [sa, sb, -sa], -sb)
    cos = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [sb, -sa, -sb], sa)
    z = np.empty(words.shape, dtype=np.float32)
    z[:, 0::2] = r * cos
    z[:, 1::2] = r * sin
    return z


def normals(seed: int, epoch: int, stream: int, start: int, count: int, latent: int) -> np.ndarray:
    """Rows start .. start + count - 1 of the (epoch, stream) noise of `seed`, shape (count, latent), float32.

    Row i holds elements i * latent .. (i + 1) * latent - 1, so a slice alone equals the same rows of
    any larger generation.
    """
    check_args(seed, epoch, stream, start, count, latent)
    first, n = start * latent, count * latent
    first_block = first // 4
    n_blocks = (first + n + 3) // 4 - first_block
    flat = words_to_normals(block_words(seed, epoch, stream, first_block, n_blocks)).reshape(-1)
    offset = first - 4 * first_block
    return flat[offset:offset + n].reshape(count, latent)
