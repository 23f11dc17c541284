"""Every seeded draw of the project, in one place: what each stream is keyed by and what it feeds.

The harness draws everything that decides the numbers in NumPy, once, and hands the same arrays to
every backend, so backends can differ only by their framework. Each stream is its own generator,
keyed by the run's seed and a tag, so no draw depends on how many numbers another stream used:

| stream | key | used by |
|---|---|---|
| initial weights | (seed, 0x1417) | every backend's start (`init_params`; the rule is the workload's) |
| data order | (seed, 0x5EED, epoch) | the training permutation of each epoch |
| noise seed | (seed, 0x0015E, epoch) | `--noise framework`: the seed of the framework's own generator |
| epoch noise | Philox (seed, 0x0015E, epoch) | the reparameterisation noise of each pass (epoch 0 = test) |
| IWAE noise | Philox (seed, K, 0x1BAE, image) | `harness evaluate`, per test image |
| lockstep noise | (seed, 0xEB5) | `harness parity`'s steps |
| figure samples | SAMPLE_SEED | the report's samples z ~ N(0, I), the same for every backend |

Moved here unchanged (bit for bit) from harness/config.py, harness/evaluation/iwae.py,
harness/verification/parity.py and harness/reporting/figure_sections.py.
"""
from __future__ import annotations

import numpy as np

from harness import counter_noise

from harness.config import ModelConfig

INIT_TAG = 0x1417
ORDER_TAG = 0x5EED
NOISE_TAG = 0x0015E
IWAE_TAG = 0x1BAE  # separates the IWAE draws from training's noise streams that share the seed
LOCKSTEP_TAG = 0xEB5
SAMPLE_SEED = 0  # the report's samples: z ~ N(0, I) from np.random.default_rng(SAMPLE_SEED)


def init_params(seed: int, model: ModelConfig = ModelConfig()) -> dict[str, np.ndarray]:
    """Initial weights drawn once in NumPy with the workload's rule (PyTorch's default,
    workloads.spec.torch_rule_init) and loaded into every backend: float32, torch state_dict layout."""
    return model.spec().init_params(np.random.default_rng([seed, INIT_TAG]), model)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which every backend walks the training set in `epoch` (1-based)."""
    return np.random.default_rng([seed, ORDER_TAG, epoch]).permutation(n).astype(np.int32)


def noise_seed(seed: int, epoch: int) -> int:
    """Seed of the framework's own noise RNG for `epoch` (0 = the sampled test loss); `--noise framework`."""
    return int(np.random.default_rng([seed, NOISE_TAG, epoch]).integers(0, 2**31 - 1))


def epoch_noise(seed: int, epoch: int, n: int, latent: int) -> np.ndarray:
    """The reparameterisation noise of `epoch` (0 = the sampled test loss), shape (n, latent), float32.

    Row i is the noise of the sample at position i of the epoch's permutation. Philox is counter-based,
    so the array depends on (seed, epoch) alone, not on anything drawn before it (resume stays exact).
    """
    bits = np.random.Philox(np.random.SeedSequence([seed, NOISE_TAG, epoch]))
    return np.random.Generator(bits).standard_normal((n, latent), dtype=np.float32)


def check_k(k: object) -> int:
    """K as an int >= 1, else ValueError with the reason; bool and float are refused, not truncated."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"K must be a positive integer, got {k!r}")
    if k < 1:
        raise ValueError(f"K must be a positive integer, got {k}")
    return int(k)


def iwae_counter_noise(seed: int, k: int, start: int, stop: int, latent: int) -> np.ndarray:
    """The IWAE eps of `iwae_noise`'s shape from the counter-based definition (harness/counter_noise.py;
    `harness evaluate --noise counter`): image i's K draws are rows i*K .. i*K + K - 1 of the stream
    (seed, epoch word = K, STREAM_IWAE), so an evaluator generates any batch of images on its device."""
    rows = counter_noise.normals(seed, k, counter_noise.STREAM_IWAE, start * k, (stop - start) * k, latent)
    return rows.reshape(stop - start, k, latent)


def iwae_noise(seed: int, k: int, start: int, stop: int, latent: int) -> np.ndarray:
    """IWAE eps for test images start..stop-1: shape (stop - start, k, latent), float32, standard normal.

    One counter-based Philox stream per image, keyed by (seed, K, tag, image index): the draws of an
    image never depend on which other images are evaluated with it, so chunked generation, batching
    and --test-limit change nothing, and K x 10000 x latent never has to sit in memory at once.
    """
    out = np.empty((stop - start, k, latent), dtype=np.float32)
    for row, i in enumerate(range(start, stop)):
        bits = np.random.Philox(np.random.SeedSequence([seed, k, IWAE_TAG, i]))
        np.random.Generator(bits).standard_normal((k, latent), dtype=np.float32, out=out[row])
    return out


def lockstep_inputs(train_x: np.ndarray, steps: int, seed: int, batch_size: int, latent: int):
    """`harness parity`'s batches (walking the permutation of epoch 1) and noise arrays of `steps` steps."""
    perm = epoch_permutation(seed, 1, train_x.shape[0])
    rng = np.random.default_rng([seed, LOCKSTEP_TAG])
    batches, noise = [], []
    for i in range(steps):
        idx = perm[(i * batch_size) % len(perm):][:batch_size]
        batches.append(np.ascontiguousarray(train_x[idx]))
        noise.append(rng.standard_normal((len(idx), latent)).astype(np.float32))
    return batches, noise


def sample_latents(n: int, latent: int) -> np.ndarray:
    """The report's n latent samples z ~ N(0, I), float64, the same for every backend and run."""
    return np.random.default_rng(SAMPLE_SEED).standard_normal((n, latent))
