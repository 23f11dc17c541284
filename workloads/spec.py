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

The work of one training step (the roofline's numerator, harness/measurement/roofline.py):
- FLOPs (`Workload.step_flops`): the workload's forward and backward products for the batch
  (`train_flops_per_sample` x batch, what torch's FlopCounterMode counts) plus Adam's update,
  ADAM_FLOPS_PER_PARAM per parameter; activations, the loss and the KL are left out (a lower bound).
- Bytes (`Workload.step_bytes`), the traffic no engine can avoid: every parameter and both Adam moments
  read once and written once (float32 master state, in a bf16 run too), and the batch and its noise
  read once. Gradients and activations are left out: a fully fused step can keep them on chip, so
  counting them could put the bound above a real engine. `bandwidth_working_set` is the footprint of
  that traffic, the size at which the probe measures the bandwidth these bytes are divided by.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import numpy as np

# torch.optim.Adam's update of one parameter (no weight decay, no amsgrad): m.lerp_(g, 1 - b1) 3,
# v.mul_(b2).addcmul_(g, g) 4, sqrt(v) / bias correction + eps 3, p.addcdiv_(m, denom) 3.
ADAM_FLOPS_PER_PARAM = 13
STATE_TENSORS = 3  # params, Adam m, Adam v: each read and written once per step
FLOAT32_BYTES = 4


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

    def n_params(self, model) -> int:
        """Number of trained parameters."""
        return sum(int(np.prod(shape)) for shape in self.param_shapes(model).values())

    def step_flops(self, model, batch: int) -> int:
        """FLOPs of one training step on `batch` samples: products forward and backward, then Adam."""
        return batch * self.train_flops_per_sample(model) + ADAM_FLOPS_PER_PARAM * self.n_params(model)

    def step_bytes(self, model, batch: int) -> int:
        """Bytes one training step must move: the state read and written, the batch and noise read."""
        state = STATE_TENSORS * FLOAT32_BYTES * self.n_params(model)
        return 2 * state + self._batch_bytes(model, batch)

    def bandwidth_working_set(self, model, batch: int) -> int:
        """Bytes the step's unavoidable traffic touches (the state once, the batch): the probe measures
        bandwidth on a buffer this size, so the bytes see the memory level they would really live in."""
        return STATE_TENSORS * FLOAT32_BYTES * self.n_params(model) + self._batch_bytes(model, batch)

    @staticmethod
    def _batch_bytes(model, batch: int) -> int:
        return batch * (model.input_dim + model.latent_dim) * FLOAT32_BYTES

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
