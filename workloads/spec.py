"""What a workload is: the one description of a model that every part of the harness reads.

A workload is a folder under `workloads/` holding what is trained, with nothing about how:

    __init__.py      WORKLOAD = Workload(...): names, parameter layout, metrics, FLOP counts (NumPy only)
    oracle.py        float64 NumPy forward, hand-written backward and decoder (the parity judge)
    torch_model.py   the model as a torch.nn.Module (named_parameters() = the neutral layout)
    flax_model.py    the model as a Flax NNX module, plus to_flax / from_flax layout conversions

Both workloads here are Bernoulli VAEs: the model maps an image batch x (B, 784) in [0, 1] to the
posterior (mu, logvar) and a latent z to 784 Bernoulli logits, and the objective is the batch sum of
BCE + analytic KL. The engines (backends/) train any such model; only this folder knows its layers.

Parameters travel between the harness and the frameworks in one neutral layout: PyTorch's state_dict
names and shapes (Linear weights (out, in), Conv2d (out, in, kh, kw), ConvTranspose2d (in, out, kh, kw)).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Metric:
    """A number the workload reports per epoch on the test set: its key in the results, what it means."""

    name: str
    meaning: str
    unit: str = "nats per test image"


@dataclass(frozen=True)
class Workload:
    """One trainable model and its objective; see the module docstring for the folder it describes."""

    name: str            # what users type: --workload NAME
    package: str         # the folder's module path, e.g. "workloads.mlp_vae"
    description: str
    param_shapes: Callable  # (ModelConfig) -> {name: shape}, in state_dict order
    train_flops_per_sample: Callable  # (ModelConfig) -> int, multiply-adds counted as 2 FLOPs
    eval_flops_per_sample: Callable   # (ModelConfig) -> int
    # The test metrics, the first is the primary one (targets, time to quality, verdicts).
    metrics: tuple[Metric, ...]
    convolutional: bool = False  # engines may arrange their epoch differently for conv layers (jax on CPU)
    # The sizes only this workload has, with their defaults, such as the MLP's ("hidden_dim", 400):
    # ModelConfig holds them (m.hidden_dim) and writes them flat into results.json's `config.model`.
    sizes: tuple[tuple[str, int], ...] = ()

    @property
    def primary_metric(self) -> str:
        return self.metrics[0].name

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def module(self, part: str) -> ModuleType:
        """Import one file of the workload folder: "oracle", "torch_model" or "flax_model"."""
        return importlib.import_module(f"{self.package}.{part}")

    def init_params(self, rng: np.random.Generator, model) -> dict[str, np.ndarray]:
        """Initial weights drawn from `rng` (seeded by harness/draws.py) with PyTorch's default rule
        (see `torch_rule_init`)."""
        return torch_rule_init(rng, self.param_shapes(model))


def fan_in(weight_shape: tuple[int, ...]) -> int:
    """PyTorch's fan-in of a weight: dim 1 times the kernel size (torch.nn.init._calculate_fan_in_and_fan_out).

    Dim 1 is the input features of a Linear (out, in) and of a Conv2d (out, in, kh, kw), but the OUTPUT
    channels of a ConvTranspose2d (in, out, kh, kw); torch uses it all the same, and so do we.
    """
    receptive = int(np.prod(weight_shape[2:])) if len(weight_shape) > 2 else 1
    return int(weight_shape[1]) * receptive


def torch_rule_init(rng: np.random.Generator, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """PyTorch's default init of Linear, Conv2d and ConvTranspose2d, drawn in NumPy, float32.

    Weights: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)); biases: the same bound
    from their layer's weight. One generator (`rng`, keyed by the seed in harness/draws.py) walks the
    tensors in state_dict order, so the draw depends on the seed alone. Frameworks' own initialisers differ (Flax's visibly), so none is used.
    """
    params = {}
    for name, shape in shapes.items():
        weight = shapes[name.rsplit(".", 1)[0] + ".weight"]
        bound = 1.0 / np.sqrt(fan_in(weight))
        params[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return params
