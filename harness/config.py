"""The one source of truth for the experiment: workload, hyper-parameters and run settings.

Every backend, the NumPy oracle and every results file read these dataclasses; nothing else in the
project writes a learning rate or a batch size down a second time. The layers themselves belong to
the workload (workloads/<name>/), which `ModelConfig.workload` names.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import workloads
from harness.errors import HarnessError
from workloads.spec import Workload

TRAIN_SIZE = 60_000
TEST_SIZE = 10_000


@dataclass(frozen=True)
class ModelConfig:
    """What is trained and how it is optimised: the workload, its sizes, Adam and the batch size."""

    workload: str = workloads.DEFAULT  # a name of workloads.PACKAGES: mlp-vae (default) or conv-vae
    input_dim: int = 784
    latent_dim: int = 20
    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8  # added outside the square root, as in torch.optim.Adam and optax.adam
    batch_size: int = 128
    # Loss: per-sample sum of Bernoulli BCE over the 784 pixels plus the analytic KL(q(z|x) || N(0, I)).
    # Train loss is reported per sample (sum over the epoch / number of samples), like pytorch/examples.
    loss: str = "bce_sum + analytic_kl"
    pixel_scale: str = "byte / 255 (not binarized)"
    # pytorch/examples keeps the final partial batch (60000 = 468 * 128 + 96); so do we, in every backend.
    drop_last: bool = False
    # The sizes only this workload has (Workload.sizes, e.g. the MLP's hidden_dim), as (name, value) pairs,
    # read as attributes (m.hidden_dim). A tuple, so that a ModelConfig stays hashable (jax caches its
    # programs by it); None or missing names take the workload's defaults.
    sizes: tuple[tuple[str, int], ...] | None = None

    def __post_init__(self) -> None:
        given = dict(self.sizes or ())
        try:
            declared = dict(workloads.get(self.workload).sizes)
        except ValueError:  # a workload this version does not know: kept as read, refused when used (spec())
            declared = dict(given)
        if set(given) - set(declared):
            raise HarnessError(f"workload {self.workload} has no size {', '.join(sorted(set(given) - set(declared)))}"
                               + (f"; its sizes: {', '.join(declared)}" if declared else ""))
        object.__setattr__(self, "sizes", tuple((k, given.get(k, v)) for k, v in declared.items()))

    def __getattr__(self, name: str) -> int:
        # Called only for names that are not fields: one of the workload's own sizes (m.hidden_dim).
        for key, value in self.__dict__.get("sizes") or ():
            if key == name:
                return value
        raise AttributeError(f"ModelConfig of {self.__dict__.get('workload', '?')} has no {name!r}")

    def spec(self) -> Workload:
        """The workload this config trains (its layers, init rule, metrics and FLOP counts): the one way
        the harness goes from a config to its workload. A name this version does not know (say, in a
        results file of a newer one) is one error line."""
        try:
            return workloads.get(self.workload)
        except ValueError as exc:
            raise HarnessError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """The form results.json's `config.model` and targets.toml's `calibrated_on.model` hold: one flat
        dict, the workload's own sizes beside the shared fields (as when hidden_dim was a field of all)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sizes"}
        return {**shared, **dict(self.sizes)}

    def oracle(self):
        """The workload's float64 NumPy oracle module (forward, loss_and_grad, decode)."""
        return self.spec().module("oracle")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The parameters' names and shapes in the neutral (torch state_dict) layout, in order."""
        return self.spec().param_shapes(self)

    def param_order(self) -> tuple[str, ...]:
        """The parameter names in state_dict order."""
        return tuple(self.shapes())

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """From a results file's `config.model` (or targets.toml's `calibrated_on.model`); fields it lacks
        take their defaults (an old record without `workload` trained the MLP); fields this version does
        not know, and sizes of another workload (old conv-vae records carry the MLP's hidden_dim), are
        ignored."""
        d = dict(d)
        try:
            declared = dict(workloads.get(d.get("workload", workloads.DEFAULT)).sizes)
        except ValueError:
            declared = {}
        sizes = {**dict(d.pop("sizes", None) or ()), **{k: d.pop(k) for k in list(d) if k in declared}}
        known = {f.name for f in dataclasses.fields(cls)} - {"sizes"}
        return cls(**{k: v for k, v in d.items() if k in known}, sizes=tuple(sizes.items()))

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
    seed: int = 1  # the run's first (usually only) seed
    # Several seeds: every backend trains on each of them, one result per (backend, seed); empty = `seed` alone.
    seeds: tuple[int, ...] = ()
    # Train the seeds of each backend as ONE batched program (backends.base.EnsembleBackend), each seed
    # seeing what its own run sees; engines without an ensemble (torch-reference) run one seed per process.
    ensemble: bool = False
    threads: int = 0  # 0 = every core of the machine; resolved before the run starts
    # Options of one engine, by backend name, read by that engine alone (e.g. {"torch-compile": {"mode":
    # "reduce-overhead"}}); backends/__init__.py declares each engine's options and their values.
    engine_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Precision is the experiment's, not one engine's: every engine runs it, and runs of different
    # precision are never compared (harness/verification/agreement.py).
    precision: str = "float32"  # "float32" (true fp32), "tf32" (opt-in, GPU only) or "bf16" (mixed; see
    # backends/torch/common.py `mixed` and backends/jax/programs.py: bf16 compute, float32 master weights)
    train_limit: int = 0  # 0 = all 60000; tests use a few hundred samples
    test_limit: int = 0
    timeout: float = 0.0  # seconds per backend, 0 = none
    target_loss: float = 100.0
    repeats: int = 0  # extra timed epochs after training, on a saved copy of the state (timing only)
    # Where the reparameterisation noise comes from: "harness" (default) hands every backend the same
    # array, drawn by `epoch_noise`; "counter" has every backend generate the same counter-based noise
    # (harness/counter_noise.py) on its own device, equal to the host reference bit for bit (torch) or
    # within 1 ulp (jax), which keeps up with seed ensembles on a GPU; "framework" lets each framework
    # draw its own from `noise_seed`, so backends follow different trajectories. Runs with different
    # sources are never compared.
    noise: str = "harness"
    # Compile from empty caches (a fresh folder per job) instead of the shared persistent ones; see
    # harness/execution/caches.py. Changes compile seconds only, never the numbers trained.
    cold_compile: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict:
        """The form results.json's `config` holds (RunConfig.from_dict reads it back)."""
        return {**dataclasses.asdict(self), "model": self.model.to_dict()}

    def run_seeds(self) -> tuple[int, ...]:
        """Every seed the run trains, in order."""
        return self.seeds or (self.seed,)

    def options(self, backend: str) -> dict[str, Any]:
        """The engine options given for `backend` ({} = its defaults)."""
        return dict(self.engine_options.get(backend, {}))

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """From a results file's `config`, of this version or an older one: the one place old records are
        migrated (fields they lack take what those runs did, fields this version does not know are dropped)."""
        d = dict(d)
        d["backends"] = tuple(d.get("backends", ()))
        d["seeds"] = tuple(d.get("seeds", ()))
        d["model"] = ModelConfig.from_dict(d.get("model", {}))
        d.setdefault("noise", "framework")  # records written before the field existed used framework noise
        if "compile_mode" in d:  # records written before engine options: torch-compile's mode was global
            mode = d.pop("compile_mode")  # (and recorded also for runs without torch-compile, which ignored it)
            if "torch-compile" in d["backends"]:
                d.setdefault("engine_options", {}).setdefault("torch-compile", {"mode": mode})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


NOISE_SOURCES = ("harness", "framework", "counter")
PRECISIONS = ("float32", "tf32", "bf16")  # RunConfig.precision


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
