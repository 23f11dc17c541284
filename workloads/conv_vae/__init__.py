"""`conv-vae`: the convolutional VAE of TensorFlow's "Convolutional Variational Autoencoder" tutorial,
adapted to this harness (latent 20, pixels /255, Bernoulli BCE(sum) + analytic KL, Adam 1e-3, batch 128).

Encoder: Conv 32 (3x3, stride 2, ReLU), Conv 64 (3x3, stride 2, ReLU), flatten, Dense 2 x latent.
Decoder: Dense 7x7x32 (ReLU), ConvTranspose 64 (3x3, stride 2, ReLU), ConvTranspose 32 (3x3, stride 2,
ReLU), ConvTranspose 1 (3x3, stride 1) to logits. Compute-bound on a GPU, where the MLP is
launch-bound: together they measure both halves of a framework. Layer list, shapes and FLOP counts:
oracle.py.

Work per training step (workloads/spec.py): the convolutions and products of `train_flops_per_sample`
(33,366,912 FLOPs per sample at latent 20) plus Adam's 13 FLOPs per parameter (181,193 parameters);
bytes: the parameters and both Adam moments read and written and the batch and its noise read, as for
the MLP. Activations are left out although the conv layers' are large: a fused step could keep a
batch's on chip, and the bound must hold for every engine. At batch 128: 4,273,320,245 FLOPs and
4,760,280 bytes, about 900 FLOPs per byte, so its roofline is the compute ceiling's.
"""
from __future__ import annotations

from workloads.bernoulli_vae import METRICS
from workloads.conv_vae.oracle import eval_flops_per_sample, param_shapes, train_flops_per_sample
from workloads.spec import Workload

WORKLOAD = Workload(
    name="conv-vae", package=__name__,
    description="TensorFlow tutorial's convolutional VAE: 2 conv + dense encoder, dense + 3 transposed-conv decoder",
    param_shapes=param_shapes, train_flops_per_sample=train_flops_per_sample,
    eval_flops_per_sample=eval_flops_per_sample, metrics=METRICS, convolutional=True,
)
