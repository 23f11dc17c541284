"""The one source of truth for the experiment: model shape, hyper-parameters and run settings.

Every backend, the NumPy reference and every results file read these dataclasses; nothing else in the
project writes a layer size, a learning rate or a batch size down a second time.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

# The parameter names and (out, in) shapes of pytorch/examples vae/main.py's state_dict, in order.
PARAM_ORDER = (
    "fc1.weight", "fc1.bias",    # encoder hidden layer
    "fc21.weight", "fc21.bias",  # posterior mean
    "fc22.weight", "fc22.bias",  # posterior log-variance
    "fc3.weight", "fc3.bias",    # decoder hidden layer
    "fc4.weight", "fc4.bias",    # Bernoulli logits
)

TRAIN_SIZE = 60_000
TEST_SIZE = 10_000


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and optimiser of the pytorch/examples VAE (Kingma & Welling 2014, MNIST)."""

    input_dim: int = 784
    hidden_dim: int = 400
    latent_dim: int = 20
    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8  # added outside the square root, as in torch.optim.Adam and optax.adam
    batch_size: int = 128
    # Loss: per-sample sum of Bernoulli BCE over the 784 pixels plus the analytic KL(q(z|x) || N(0, I)).
    # Train loss is reported per sample (sum over the epoch / number of samples), like the reference.
    loss: str = "bce_sum + analytic_kl"
    pixel_scale: str = "byte / 255 (not binarized)"
    # The reference keeps the final partial batch (60000 = 468 * 128 + 96); so do we, in every backend.
    drop_last: bool = False

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The state_dict shapes, weights stored as (out, in) like torch.nn.Linear."""
        d, h, z = self.input_dim, self.hidden_dim, self.latent_dim
        layers = {"fc1": (h, d), "fc21": (z, h), "fc22": (z, h), "fc3": (h, z), "fc4": (d, h)}
        out: dict[str, tuple[int, ...]] = {}
        for name, (o, i) in layers.items():
            out[f"{name}.weight"] = (o, i)
            out[f"{name}.bias"] = (o,)
        return out

    def batch_sizes(self, n: int) -> list[int]:
        """Sizes of the batches of one pass over n samples (a smaller last batch is kept)."""
        full, rest = divmod(n, self.batch_size)
        return [self.batch_size] * full + ([rest] if rest and not self.drop_last else [])


@dataclass(frozen=True)
class RunConfig:
    """What one invocation of `harness run` (or one sweep job) was asked to do."""

    backends: tuple[str, ...] = ("torch",)
    device: str = "cpu"
    epochs: int = 10
    seed: int = 1
    threads: int = 0  # 0 = every core of the machine; resolved before the run starts
    compile_mode: str = "default"
    precision: str = "float32"  # "float32" (true fp32) or "tf32" (opt-in, GPU only)
    train_limit: int = 0  # 0 = all 60000; tests use a few hundred samples
    test_limit: int = 0
    timeout: float = 0.0  # seconds per backend, 0 = none
    target_loss: float = 100.0
    repeats: int = 0  # extra timed epochs after training, on a saved copy of the state (timing only)
    # Where the reparameterisation noise comes from: "harness" (default) hands every backend the same
    # array, drawn by `epoch_noise`; "framework" lets each framework draw its own from `noise_seed`, so
    # backends follow different trajectories. Runs with different sources are never compared.
    noise: str = "harness"
    # Compile from empty caches (a fresh folder per job) instead of the shared persistent ones; see
    # harness/caches.py. Changes compile seconds only, never the numbers trained.
    cold_compile: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        d = dict(d)
        d["backends"] = tuple(d.get("backends", ()))
        d["model"] = ModelConfig(**d.get("model", {}))
        d.setdefault("noise", "framework")  # records written before the field existed used framework noise
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def init_params(seed: int, model: ModelConfig = ModelConfig()) -> dict[str, np.ndarray]:
    """Initial weights drawn once in NumPy with torch.nn.Linear's rule and loaded into every backend.

    Weights and biases are U(-1/sqrt(fan_in), 1/sqrt(fan_in)); float32; keys and shapes of the
    reference state_dict. Frameworks' own initialisers differ (Flax's visibly), so none is used.
    """
    rng = np.random.default_rng([seed, 0x1417])
    params = {}
    for name, shape in model.shapes().items():
        fan_in = model.shapes()[name.replace(".bias", ".weight")][1]
        bound = 1.0 / np.sqrt(fan_in)
        params[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return params


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which every backend walks the training set in `epoch` (1-based)."""
    return np.random.default_rng([seed, 0x5EED, epoch]).permutation(n).astype(np.int32)


NOISE_SOURCES = ("harness", "framework")


def noise_seed(seed: int, epoch: int) -> int:
    """Seed of the framework's own noise RNG for `epoch` (0 = the sampled test loss); `--noise framework`."""
    return int(np.random.default_rng([seed, 0x0015E, epoch]).integers(0, 2**31 - 1))


def epoch_noise(seed: int, epoch: int, n: int, latent: int) -> np.ndarray:
    """The reparameterisation noise of `epoch` (0 = the sampled test loss), shape (n, latent), float32.

    Row i is the noise of the sample at position i of the epoch's permutation. Philox is counter-based,
    so the array depends on (seed, epoch) alone, not on anything drawn before it (resume stays exact).
    """
    bits = np.random.Philox(np.random.SeedSequence([seed, 0x0015E, epoch]))
    return np.random.Generator(bits).standard_normal((n, latent), dtype=np.float32)


def parse_seeds(text: str) -> list[int]:
    """'1-5' -> [1..5], '1,3,7' -> [1, 3, 7]; raises ValueError on anything else."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            lo_i, hi_i = int(lo), int(hi)
            if hi_i < lo_i:
                raise ValueError(f"empty seed range {part!r}")
            seeds.extend(range(lo_i, hi_i + 1))
        else:
            seeds.append(int(part))
    return seeds
