"""Seed-ensemble members one after another (engine option `members=sequential`): the CPU's arrangement.

Why: on a CPU, torch.func.vmap over the stacked params costs more per member than the single-seed
engine (the members' matrix products become batched ones, whose weight gradients come out transposed
and are copied), and batching members buys nothing there: one member's step already fills the CPU.

So each member is the workload's own module, built once, whose parameters are views of row i of the
stacked tensors (`nn.Parameter` of a view shares its storage): its forward and backward are the
single-seed engine's. `torch.autograd.grad` gives member i's gradients, which are copied into row i of
the stacked `.grad` (allocated once, every row overwritten every step), and the one fused Adam over the
stacked tensors then updates all members at once, as in the vmap arrangement; the Adam state, the
checkpoint layout and everything else of TorchEnsemble stay as they are. Nothing mixes members, so a
NaN member leaves the others alone. torch.compile (ensemble_compile.py) compiles the loss once for all
members: the module is an argument of the compiled function, and with inlined nn.Modules dynamo guards
on its parameters' shapes, not their identity, so N members share the warm-up's graphs.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from backends.torch import MEMBERS
from backends.torch import common as tc
from harness.errors import HarnessError

# (member's module, x, eps) -> its batch-sum training loss (0-d), or its two eval losses (a (2,) tensor)
MemberLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def train_loss(precision: str) -> MemberLoss:
    """A member's training loss: the single-seed engines' (tc.forward_loss)."""
    return lambda model, x, eps: tc.forward_loss(model, x, eps, precision)


def eval_losses(precision: str) -> MemberLoss:
    """A member's eval losses, z = mu and sampled z: the single-seed engines' (tc.eval_losses), stacked."""
    return lambda model, x, eps: torch.stack(tc.eval_losses(model, x, eps, precision))


def member_arrangement(engine: str, option: str, device: torch.device) -> str:
    """'vmap' or 'sequential' for the engine option `members` ('auto', 'vmap' or 'sequential'): auto is
    sequential on the CPU (see the module docstring) and vmap elsewhere, where the device is latency-bound
    at these model sizes and batching the members is what fills it."""
    if option not in MEMBERS:
        raise HarnessError(f"{engine} members {option!r}: choose from {', '.join(MEMBERS)}")
    if option != "auto":
        return option
    return "sequential" if device.type == "cpu" else "vmap"


class SequentialMembers:
    """N modules over the rows of the stacked params; each step's gradients go into the stacked `.grad`."""

    def __init__(self, build: Callable[[], nn.Module], params: dict[str, torch.Tensor], size: int):
        self.models = [self._view_module(build(), params, i) for i in range(size)]
        self.member_params = [list(m.parameters()) for m in self.models]
        for p in params.values():
            p.grad = torch.zeros_like(p)  # kept for the whole run: every step overwrites every row
        self.grads = [[p.grad[i] for p in params.values()] for i in range(size)]

    @staticmethod
    def _view_module(model: nn.Module, params: dict[str, torch.Tensor], i: int) -> nn.Module:
        """`model` with each parameter replaced by a view of row i of its stacked tensor (same order)."""
        names = [n for n, _ in model.named_parameters()]
        if names != list(params):
            raise ValueError(f"member parameters {names} are not the stacked ones {list(params)}")
        for name in names:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, nn.Parameter(params[name].detach()[i]))
        return model

    def step_losses(self, loss: MemberLoss, xb: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """Each member's batch-sum loss on its own batch xb[i], eb[i], (N,); its gradients are written into
        row i of the stacked `.grad`."""
        losses = []
        for model, params, grads, x, eps in zip(self.models, self.member_params, self.grads, xb, eb):
            value = loss(model, x, eps)
            torch._foreach_copy_(grads, torch.autograd.grad(value, params))
            losses.append(value.detach())
        return torch.stack(losses)

    def eval_losses(self, losses: MemberLoss, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Each member's two eval loss sums on the shared x with its own noise eps[i]: (N, 2)."""
        return torch.stack([losses(model, x, e) for model, e in zip(self.models, eps)])
