"""`torch-reference`: the pytorch/examples vae/main.py training loop, as users know it, for any workload.

Kept faithful on purpose, because it is the baseline every speed-up is quoted against: a DataLoader
over a Dataset that converts each sample from bytes to a float tensor (what torchvision's ToTensor
does), batches of 128, sigmoid then F.binary_cross_entropy, and `loss.item()` after every step. Only
what must be shared for a fair comparison comes from the harness: the initial weights, the sample
order (a sampler that yields the harness's permutation instead of shuffle=True) and the noise (each
batch's slice of the harness's array; with `--noise framework`, the example's own `torch.randn_like`
from the global RNG seeded per epoch).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from backends.torch import common as tc
from backends.base import Metrics, Noise, per_sample
from harness.config import RunConfig


class BytesMNIST(Dataset):
    """Images stored as bytes and converted per sample, like torchvision.datasets.MNIST + ToTensor."""

    def __init__(self, x: np.ndarray):
        self.bytes = torch.from_numpy(np.rint(x * 255.0).astype(np.uint8))

    def __len__(self) -> int:
        return self.bytes.shape[0]

    def __getitem__(self, i):
        return self.bytes[i].to(torch.float32).div(255), 0


def reparameterize(mu, logvar, eps=None):
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std) if eps is None else eps
    return mu + eps * std


def decode(model: nn.Module, z):
    """The example's decode: sigmoid of the logits, taken in float32 (under bf16 the logits are bf16, and
    bf16 probabilities would round to 1 and send BCE to its clamp)."""
    return torch.sigmoid(model.decode_logits(z).float())


def forward(model: nn.Module, x, eps=None):
    """vae/main.py's VAE.forward on the workload's encoder and decoder: (recon, mu, logvar)."""
    mu, logvar = model.encode(x)
    return decode(model, reparameterize(mu, logvar, eps)), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, recon_x.shape[1]), reduction="sum")
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


class TorchReferenceBackend:
    """The reference loop: DataLoader, per-sample conversion, a host sync every step."""

    name = "torch-reference"

    def setup(self, params, train_x, test_x, config: RunConfig) -> None:
        self.precision = config.precision
        self.m = config.model
        self.device, self.model = tc.placed_model(config, params)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.m.learning_rate,
                                          betas=(self.m.beta1, self.m.beta2), eps=self.m.adam_eps)
        self.train_set, self.test_set = BytesMNIST(train_x), BytesMNIST(test_x)

    def warmup(self) -> None:
        pass

    def train_epoch(self, perm: np.ndarray, noise: Noise) -> float:
        torch.manual_seed(noise.seed)
        loader = DataLoader(self.train_set, batch_size=self.m.batch_size, sampler=perm.tolist())
        self.model.train()
        train_loss = 0.0
        for batch_idx, (data, _) in enumerate(loader):
            data = data.to(self.device)
            self.optimizer.zero_grad()
            loss = self._loss(data, self._batch_noise(noise, batch_idx, len(data)))
            loss.backward()
            train_loss += loss.item()
            self.optimizer.step()
        return train_loss / len(perm)

    def evaluate(self, noise: Noise) -> Metrics:
        torch.manual_seed(noise.seed)
        loader = DataLoader(self.test_set, batch_size=self.m.batch_size, shuffle=False)
        self.model.eval()
        loss_mu = loss_sampled = 0.0
        with torch.no_grad():
            for batch_idx, (data, _) in enumerate(loader):
                data = data.to(self.device)
                with tc.mixed(data, self.precision):
                    mu, logvar = self.model.encode(data)
                    recon_mu = decode(self.model, mu)
                    recon_z = decode(self.model, reparameterize(mu, logvar, self._batch_noise(noise, batch_idx, len(data))))
                mu, logvar = mu.float(), logvar.float()
                loss_mu += loss_function(recon_mu.float(), data, mu, logvar).item()
                loss_sampled += loss_function(recon_z.float(), data, mu, logvar).item()
        n = len(self.test_set)
        return per_sample(self.m.spec().metric_names, (loss_mu, loss_sampled), n)

    def _batch_noise(self, noise: Noise, batch_idx: int, size: int) -> torch.Tensor | None:
        """This batch's rows of the harness's noise; None lets the example draw its own."""
        if noise.eps is None:
            return None
        start = batch_idx * self.m.batch_size
        return torch.from_numpy(noise.eps[start:start + size]).to(self.device)

    def lockstep_step(self, x: np.ndarray, eps: np.ndarray) -> float:
        data = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        eb = torch.from_numpy(np.ascontiguousarray(eps, np.float32)).to(self.device)
        self.optimizer.zero_grad()
        loss = self._loss(data, eb)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def _loss(self, data, eps):
        """The example's loss of one batch; under bf16 the model runs in autocast, the loss in float32."""
        with tc.mixed(data, self.precision):
            recon, mu, logvar = forward(self.model, data, eps)
        return loss_function(recon.float(), data, mu.float(), logvar.float())

    def get_state(self) -> dict[str, np.ndarray]:
        return tc.get_state(self.model, self.optimizer)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        tc.set_state(self.model, self.optimizer, state)

    def decode(self, z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return decode(self.model, torch.from_numpy(z.astype(np.float32)).to(self.device)).cpu().numpy()

    def device_memory(self) -> dict[str, float]:
        return tc.device_memory(self.device)

    def synchronize(self) -> None:
        tc.synchronize(self.device)

    def describe(self) -> dict[str, str]:
        """How this run executes its training step and eval, for the record."""
        return {"arrangement": "reference", "step": "pytorch/examples loop: DataLoader, eager step, "
                "loss.item() every step", "optimizer": tc.adam_description(self.optimizer), "eval": "eager"}
