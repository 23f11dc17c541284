"""`mlp-vae`: pytorch/examples vae/main.py, 784-400-20-400-784 with ReLU (Kingma & Welling 2014, MNIST).

The default workload. Launch-bound on a GPU at this size: it measures how well a framework hides host
overhead per step.

Work per training step (workloads/spec.py): the 14 products of `train_products` (3,280,000 FLOPs per
sample at the default sizes) plus Adam's 13 FLOPs per parameter (652,824 parameters); bytes: the
parameters and both Adam moments read and written (24 bytes per parameter) and the batch and its noise
read (4 x (784 + latent) bytes per sample). At batch 128 that is 428,326,712 FLOPs and 16,079,424
bytes, about 27 FLOPs per byte (tests/test_roofline.py counts them).
"""
from __future__ import annotations

from workloads.bernoulli_vae import METRICS
from workloads.spec import Workload

# encoder hidden layer, posterior mean, posterior log-variance, decoder hidden layer, Bernoulli logits
LAYERS = ("fc1", "fc21", "fc22", "fc3", "fc4")


def layer_sizes(m) -> dict[str, tuple[int, int]]:
    """(out, in) of every Linear layer, in state_dict order."""
    d, h, z = m.input_dim, m.hidden_dim, m.latent_dim
    return {"fc1": (h, d), "fc21": (z, h), "fc22": (z, h), "fc3": (h, z), "fc4": (d, h)}


def param_shapes(m) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes, weights stored (out, in) like torch.nn.Linear."""
    out: dict[str, tuple[int, ...]] = {}
    for name, (o, i) in layer_sizes(m).items():
        out[f"{name}.weight"] = (o, i)
        out[f"{name}.bias"] = (o,)
    return out


def train_products(m, batch: int) -> list[tuple[int, int, int]]:
    """(rows, inner, columns) of every matrix product of one training step on `batch` samples: each
    layer's forward, its weight gradient and its input gradient, except fc1's (the data needs none)."""
    sizes = layer_sizes(m)
    forward = [(batch, i, o) for o, i in sizes.values()]
    weight_grads = [(o, batch, i) for o, i in sizes.values()]
    input_grads = [(batch, o, i) for name, (o, i) in sizes.items() if name != "fc1"]
    return forward + weight_grads + input_grads


def train_flops_per_sample(m) -> int:
    """Matrix-product FLOPs of one training sample (2 FLOPs per multiply-add; elementwise ops ignored)."""
    return sum(2 * rows * inner * cols for rows, inner, cols in train_products(m, 1))


def eval_flops_per_sample(m) -> int:
    """Eval encodes once and decodes twice (z = mu and one sampled z)."""
    macs = {name: o * i for name, (o, i) in layer_sizes(m).items()}
    return 2 * (macs["fc1"] + macs["fc21"] + macs["fc22"] + 2 * (macs["fc3"] + macs["fc4"]))


WORKLOAD = Workload(
    name="mlp-vae", package=__name__,
    description="pytorch/examples VAE: 784-400-20-400-784 MLP, ReLU, Bernoulli decoder",
    param_shapes=param_shapes, train_flops_per_sample=train_flops_per_sample,
    eval_flops_per_sample=eval_flops_per_sample, metrics=METRICS,
    sizes=(("hidden_dim", 400),),  # the hidden layer of the encoder and of the decoder
)
