"""Deliberately broken and faulty backends, registered through VAE_BENCH_PLUGINS=tests.plugin_backends.

Mutants (each changes one thing the parity and loss checks must catch) and fault injectors (raise,
NaN, crash, hang) for the reliability tests. Never registered outside the tests.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from backends import BackendSpec, register
from backends.torch import common as tc
from backends.torch.eager import TorchEagerBackend
from backends.torch.ensemble import TorchEnsemble


def kl_sign_flipped(logits, x, mu, logvar):
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return bce + 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def mean_reduction(logits, x, mu, logvar):
    return tc.loss_sum(logits, x, mu, logvar) / x.shape[0]


class _LossMutant(TorchEagerBackend):
    loss = staticmethod(tc.loss_sum)

    def build_step(self):
        model, opt, loss_fn = self.model, self.opt, self.loss

        def step(xb, eb):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(*_fwd(model, xb, eb))
            loss.backward()
            opt.step()
            return loss.detach()
        return step


def _fwd(model, xb, eb):
    logits, mu, logvar = model(xb, eb)
    return logits, xb, mu, logvar


class KLSignBackend(_LossMutant):
    name = "mutant-kl-sign"
    loss = staticmethod(kl_sign_flipped)


class MeanReductionBackend(_LossMutant):
    name = "mutant-mean"
    loss = staticmethod(mean_reduction)


class EpsInsideSqrtBackend(TorchEagerBackend):
    """Adam with eps inside the square root (as in some other Adam variants)."""

    name = "mutant-adam-eps"

    def make_optimizer(self):
        m = self.m
        params = list(self.model.parameters())
        state = {"t": 0, "m": [torch.zeros_like(p) for p in params], "v": [torch.zeros_like(p) for p in params]}

        class Adam(torch.optim.Adam):
            @torch.no_grad()
            def step(self, closure=None):
                state["t"] += 1
                t = state["t"]
                for p, mm, vv in zip(params, state["m"], state["v"]):
                    mm.mul_(m.beta1).add_(p.grad, alpha=1 - m.beta1)
                    vv.mul_(m.beta2).addcmul_(p.grad, p.grad, value=1 - m.beta2)
                    mhat = mm / (1 - m.beta1**t)
                    vhat = vv / (1 - m.beta2**t)
                    p.sub_(m.learning_rate * mhat / torch.sqrt(vhat + m.adam_eps))
        return Adam(params, lr=m.learning_rate)


class LargeLRBackend(TorchEagerBackend):
    """Learning rate ten times too large."""

    name = "mutant-lr10"

    def make_optimizer(self):
        return torch.optim.Adam(self.model.parameters(), lr=10 * self.m.learning_rate,
                                betas=(self.m.beta1, self.m.beta2), eps=self.m.adam_eps)


class RaisingBackend(TorchEagerBackend):
    name = "fault-raise"

    def train_epoch(self, perm, noise):
        raise RuntimeError("injected failure in train_epoch")


class NaNBackend(TorchEagerBackend):
    """Trains normally, then returns NaN from epoch FAULT_EPOCH (default 2)."""

    name = "fault-nan"
    epoch = 0

    def train_epoch(self, perm, noise):
        self.epoch += 1
        loss = super().train_epoch(perm, noise)
        return float("nan") if self.epoch >= int(os.environ.get("FAULT_EPOCH", "2")) else loss


class ExitBackend(TorchEagerBackend):
    """The child process dies abruptly (as on a segfault or the OOM killer) in epoch 2."""

    name = "fault-exit"
    epoch = 0

    def train_epoch(self, perm, noise):
        self.epoch += 1
        if self.epoch >= 2:
            os._exit(7)
        return super().train_epoch(perm, noise)


class SlowBackend(TorchEagerBackend):
    """The torch backend plus a pause after each epoch, so a test can interrupt a run mid-way."""

    name = "slow-torch"

    def train_epoch(self, perm, noise):
        loss = super().train_epoch(perm, noise)
        time.sleep(1.0)
        return loss


class SlowEnsemble(TorchEnsemble):
    """slow-torch's seed ensemble: the torch ensemble plus a pause after each epoch."""

    name = "slow-torch"

    def train_epoch(self, perms, noises):
        losses = super().train_epoch(perms, noises)
        time.sleep(1.0)
        return losses


class HangBackend(TorchEagerBackend):
    name = "fault-hang"

    def train_epoch(self, perm, noise):
        time.sleep(3600)


class ParityExitBackend(TorchEagerBackend):
    """The child process dies abruptly in its first lockstep parity step."""

    name = "fault-exit-parity"

    def lockstep_step(self, x, eps):
        os._exit(9)


class NaNMemberEnsemble(TorchEnsemble):
    """A torch ensemble whose member FAULT_MEMBER (default 1) gets NaN weights before epoch FAULT_EPOCH
    (default 2): the harness must report that seed diverged and keep the others' results."""

    name = "fault-nan-member"
    epoch = 0

    def train_epoch(self, perms, noises):
        self.epoch += 1
        if self.epoch == int(os.environ.get("FAULT_EPOCH", "2")):
            states = self.get_state()
            member = int(os.environ.get("FAULT_MEMBER", "1"))
            states[member] = {k: v if k == "adam.step" else np.full_like(v, np.nan) for k, v in states[member].items()}
            self.set_state(states)
        return super().train_epoch(perms, noises)


for cls in (KLSignBackend, MeanReductionBackend, EpsInsideSqrtBackend, LargeLRBackend,
            RaisingBackend, NaNBackend, ExitBackend, SlowBackend, HangBackend, ParityExitBackend):
    register(cls.name, BackendSpec(__name__, cls.__name__, "torch", "torch", cls.__doc__ or cls.name,
                                   ensemble=f"{__name__}:SlowEnsemble" if cls is SlowBackend else ""))
register(NaNMemberEnsemble.name, BackendSpec(__name__, "TorchEagerBackend", "torch", "torch", NaNMemberEnsemble.__doc__,
                                             ensemble=f"{__name__}:NaNMemberEnsemble"))

for name, cls in (("torch", "SpyTorchEagerBackend"), ("torch-reference", "SpyTorchReferenceBackend"),
                  ("jax", "SpyJaxBackend")):
    register(f"spy-{name}", BackendSpec("tests.spy_backends", cls, name.split("-")[0], name.split("-")[0],
                                        f"{name}, saving the noise it receives"))
