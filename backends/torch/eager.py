"""PyTorch eager backend: the workload's model and the VAE loss, written the way a PyTorch expert would run it.

Differences from the pytorch/examples loop are about speed only: the dataset lives on the device as
one tensor and batches are gathered by index (no DataLoader, no per-sample Python work), the epoch's
noise goes to the device in one transfer, and the loss is accumulated on the device so there is no host
synchronisation inside the step loop.
"""
from __future__ import annotations

import numpy as np
import torch

from backends.torch import DENORMALS
from backends.torch import common as tc
from backends.base import Metrics, Noise
from harness.config import RunConfig


class TorchEagerBackend:
    """`torch`: eager PyTorch, float32 (or the bf16 recipe of common.mixed)."""

    name = "torch"

    def setup(self, params, train_x, test_x, config: RunConfig) -> None:
        self.m, self.precision = config.model, config.precision
        self.denormals = tc.set_denormals(config.options(self.name).get("denormals", DENORMALS[0]))
        self.device, self.model = tc.placed_model(config, params)
        self.opt = self.make_optimizer()
        self.train_x = torch.from_numpy(train_x).to(self.device)
        self.test_x = torch.from_numpy(test_x).to(self.device)
        self.step_fn = self.build_step()

    def make_optimizer(self) -> torch.optim.Adam:
        # fused: one kernel per parameter for the whole update (CPU and CUDA) instead of a loop of small
        # per-tensor ops, which costs more than the arithmetic at this model size. Lockstep parity
        # covers its numerics.
        return tc.make_adam(self.model, self.m, self.device, fused=True)

    def build_step(self):
        model, opt, precision = self.model, self.opt, self.precision

        def step(xb, eb):
            opt.zero_grad(set_to_none=True)
            loss = tc.forward_loss(model, xb, eb, precision)
            loss.backward()
            opt.step()
            return loss.detach()

        return step

    def warmup(self) -> None:
        pass

    def train_epoch(self, perm: np.ndarray, noise: Noise) -> float:
        n, bs = len(perm), self.m.batch_size
        idx = torch.from_numpy(perm.astype(np.int64)).to(self.device)
        eps = tc.noise_tensor(noise, n, self.m.latent_dim, self.device)
        total = torch.zeros((), device=self.device)
        for i in range(0, n, bs):
            xb = self.train_x.index_select(0, idx[i:i + bs])
            total += self.step_fn(xb, eps[i:i + bs])
        return float(total) / n

    def evaluate(self, noise: Noise) -> Metrics:
        return tc.evaluate(self.model, self.test_x, noise, self.m, precision=self.precision)

    def lockstep_step(self, x: np.ndarray, eps: np.ndarray) -> float:
        xb = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        eb = torch.from_numpy(np.ascontiguousarray(eps, np.float32)).to(self.device)
        return float(self.step_fn(xb, eb))

    def get_state(self) -> dict[str, np.ndarray]:
        return tc.get_state(self.model, self.opt)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        tc.set_state(self.model, self.opt, state)

    def decode(self, z: np.ndarray) -> np.ndarray:
        return tc.decode(self.model, z)

    def device_memory(self) -> dict[str, float]:
        return tc.device_memory(self.device)

    def synchronize(self) -> None:
        tc.synchronize(self.device)

    def describe(self) -> dict[str, str]:
        """How this run executes its training step and eval, for the record."""
        return {"arrangement": "eager", "step": "eager: zero_grad, forward+loss, backward, Adam",
                "optimizer": tc.adam_description(self.opt), "eval": "eager", "denormals": self.denormals}
