"""Seed ensembles in PyTorch: N members trained as ONE batched program (torch.func ensembling).

One model (tc.build_model) is the template; each parameter is a stacked tensor with the member axis
first (as torch.func.stack_module_state makes them), and `torch.func.vmap(functional_call(...))`
computes every member's batch-sum loss (tc.forward_loss: the single-seed engines' loss, precision and
all) from its own params, batch and noise. The members' losses are summed and backpropagated once:
d(sum)/d(loss_i) = 1, so member i's gradient is exactly its own. One fused Adam over the stacked
tensors is then N independent Adams (Adam is elementwise; nothing clips or checks across members), so
a member whose loss is NaN leaves the others untouched. Member i's batch j is
train_x[perms[i, j*B:(j+1)*B]], gathered on the device as (N, B) indices -> (N, B, D); the last partial
batch is kept. The conv workload batches too: vmap turns convolutions over stacked weights into
grouped convolutions.

That is the `vmap` member arrangement (engine option `members`; auto: vmap off the CPU). On the CPU the
default is `sequential` (ensemble_members.py): the members' own modules, over the same stacked tensors,
run one after another, and the same one fused Adam updates them all.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from backends.torch import DENORMALS, MEMBERS
from backends.torch import common as tc
from backends.torch import ensemble_members as em
from backends.base import Metrics, Noise, per_sample
from harness.config import RunConfig
from harness.errors import HarnessError


class _Member(nn.Module):
    """The workload's model seen through its losses, so that functional_call can run one member's
    params through the very functions the single-seed engines use."""

    def __init__(self, model: nn.Module, precision: str):
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, x, eps, train: bool = True):
        if train:
            return tc.forward_loss(self.model, x, eps, self.precision)
        return torch.stack(tc.eval_losses(self.model, x, eps, self.precision))


class TorchEnsemble:
    """`torch --ensemble`: eager PyTorch, the members vmapped over stacked params (or one after another),
    one fused Adam."""

    name = "torch"

    def setup(self, params: list[dict[str, np.ndarray]], train_x: np.ndarray, test_x: np.ndarray,
              config: RunConfig) -> None:
        if not params:
            raise HarnessError("an ensemble needs at least one member")
        self.m, self.precision, self.size = config.model, config.precision, len(params)
        options = config.options(self.name)
        self.denormals = tc.set_denormals(options.get("denormals", DENORMALS[0]))
        tc.configure(config)
        self.device = tc.resolve_device(config.device)
        self.members = em.member_arrangement(self.name, options.get("members", MEMBERS[0]), self.device)
        # The template's own tensors are never used (functional_call(strict=True) replaces every one);
        # on the device all the same, so no compiled graph ever sees a CPU tensor beside CUDA ones.
        self.member = _Member(tc.build_model(self.m).to(self.device), self.precision)
        self.names = [n for n, _ in self.member.model.named_parameters()]
        # copied into torch's own memory (on the CPU too): NumPy's buffers are not 64-byte aligned, and a
        # weight's alignment, changing from process to process, changes the speed of its matrix products
        self.params = {n: torch.from_numpy(np.stack([np.asarray(p[n], np.float32) for p in params]))
                       .to(self.device, copy=True).requires_grad_(True) for n in self.names}
        self.sequential = (em.SequentialMembers(lambda: tc.build_model(self.m).to(self.device), self.params, self.size)
                           if self.members == "sequential" else None)
        self.opt = self.make_optimizer()
        self.train_x = torch.from_numpy(train_x).to(self.device)
        self.test_x = torch.from_numpy(test_x).to(self.device)
        self.batched_loss, self.batched_eval = self._vmapped(True), self._vmapped(False)
        self.step_fn = self.build_step()
        self.eval_fn = self.build_eval()

    def make_optimizer(self, **kw) -> torch.optim.Adam:
        m = self.m
        return torch.optim.Adam(list(self.params.values()), lr=m.learning_rate, betas=(m.beta1, m.beta2),
                                eps=m.adam_eps, fused=True, **kw)

    def _vmapped(self, train: bool):
        """(x, eps) -> per-member losses: (N,) batch sums for training, (N, 2) for eval (x shared)."""
        member, names, params = self.member, self.names, self.params

        def one(p, x, eps):
            return functional_call(member, {f"model.{n}": p[n] for n in names}, (x, eps), {"train": train},
                                   strict=True)

        in_dims = (0, 0 if train else None, 0)
        return lambda x, eps: vmap(one, in_dims=in_dims)(params, x, eps)  # vmap inside, for torch.compile

    def build_step(self):
        opt, forward_backward = self.opt, self.forward_backward(self.batched_loss, em.train_loss(self.precision))

        def step(xb, eb):
            losses = forward_backward(xb, eb)
            opt.step()
            if self.sequential is None:  # sequential: the stacked .grad stays, each step overwrites it
                opt.zero_grad(set_to_none=True)
            return losses

        return step

    def forward_backward(self, batched_loss, member_loss: em.MemberLoss):
        """(xb, eb) -> the (N,) losses, every member's gradient left in the stacked `.grad`."""
        if self.sequential is not None:
            return functools.partial(self.sequential.step_losses, member_loss)

        def vmapped(xb, eb):
            losses = batched_loss(xb, eb)
            losses.sum().backward()  # each member's gradient is its own: d(sum)/d(loss_i) = 1
            return losses.detach()
        return vmapped

    def build_eval(self):
        if self.sequential is not None:
            return functools.partial(self.sequential.eval_losses, em.eval_losses(self.precision))
        return self.batched_eval

    def warmup(self) -> None:
        pass

    def noise(self, noises: list[Noise], n: int) -> torch.Tensor:
        """The members' noise of one pass, (N, n, latent) on the device: host arrays in one upload."""
        if len(noises) != self.size:
            raise ValueError(f"{len(noises)} noises for {self.size} members")
        if all(nz.eps is not None for nz in noises):
            eps = np.stack([np.asarray(nz.eps, np.float32) for nz in noises])
            return torch.from_numpy(eps).to(self.device)
        return torch.stack([tc.noise_tensor(nz, n, self.m.latent_dim, self.device) for nz in noises])

    def gather(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """train_x rows of (N, b) indices as an (N, b, D) batch (into `out` when given)."""
        flat = rows.reshape(-1)
        if out is None:
            return self.train_x.index_select(0, flat).view(*rows.shape, -1)
        torch.index_select(self.train_x, 0, flat, out=out.view(flat.shape[0], -1))
        return out

    def run_batch(self, rows: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        return self.step_fn(self.gather(rows), eb)

    def train_epoch(self, perms: np.ndarray, noises: list[Noise]) -> np.ndarray:
        if perms.shape[0] != self.size:
            raise ValueError(f"{perms.shape[0]} permutations for {self.size} members")
        n, bs = perms.shape[1], self.m.batch_size
        idx = torch.from_numpy(perms.astype(np.int64)).to(self.device)
        eps = self.noise(noises, n)
        self.before_epoch(n)
        total = torch.zeros(self.size, device=self.device)
        for i in range(0, n, bs):
            total += self.run_batch(idx[:, i:i + bs], _dense(eps[:, i:i + bs]))
        return total.cpu().numpy().astype(np.float64) / n

    def before_epoch(self, n: int) -> None:
        """Hook for engines that must prepare each batch size before the loop (CUDA graphs)."""

    def eval_chunk(self) -> int:
        """Test images per eval call: N members x chunk stays within the single-seed pass's EVAL_CHUNK
        (sequential: one member at a time, the single-seed pass's chunk)."""
        return tc.EVAL_CHUNK if self.sequential is not None else max(1, tc.EVAL_CHUNK // self.size)

    @torch.no_grad()
    def evaluate(self, noises: list[Noise]) -> list[Metrics]:
        n, chunk = self.test_x.shape[0], self.eval_chunk()
        eps = self.noise(noises, n)
        total = torch.zeros(self.size, 2, device=self.device)
        for i in range(0, n, chunk):
            total += self.eval_call(self.test_x[i:i + chunk], _dense(eps[:, i:i + chunk]))
        sums, names = total.cpu().numpy(), self.m.spec().metric_names
        return [per_sample(names, tuple(row), n) for row in sums]

    def eval_call(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.eval_fn(x, eps)

    def lockstep_step(self, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
        xb = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        eb = torch.from_numpy(np.ascontiguousarray(eps, np.float32)).to(self.device)
        return self.step_fn(xb, eb).cpu().numpy().astype(np.float64)

    def get_state(self) -> list[dict[str, np.ndarray]]:
        host = {n: p.detach().cpu().numpy() for n, p in self.params.items()}
        step = 0
        for n, p in self.params.items():
            s = self.opt.state.get(p)
            host[f"adam.m.{n}"] = s["exp_avg"].cpu().numpy() if s else np.zeros(p.shape, np.float32)
            host[f"adam.v.{n}"] = s["exp_avg_sq"].cpu().numpy() if s else np.zeros(p.shape, np.float32)
            step = int(s["step"]) if s else 0
        states = [{k: v[i].copy() for k, v in host.items()} for i in range(self.size)]
        for state in states:
            state["adam.step"] = np.array(step, dtype=np.int64)
        return states

    def set_state(self, states: list[dict[str, np.ndarray]]) -> None:
        """Copy every member's values in place into the stacked tensors (graphs hold them; tc.set_state)."""
        if len(states) != self.size:
            raise ValueError(f"{len(states)} states for {self.size} members")
        steps = {int(s["adam.step"]) for s in states}
        if len(steps) != 1:
            raise HarnessError(f"ensemble members share one Adam step count, got adam.step {sorted(steps)}")
        step = steps.pop()
        if any(not self.opt.state.get(p) for p in self.params.values()):
            tc.create_adam_state(self.opt)

        def stacked(key: str) -> torch.Tensor:
            return torch.from_numpy(np.stack([np.asarray(s[key], np.float32) for s in states]))

        with torch.no_grad():
            for n, p in self.params.items():
                s = self.opt.state[p]
                p.copy_(stacked(n))
                s["step"].fill_(step)
                s["exp_avg"].copy_(stacked(f"adam.m.{n}"))
                s["exp_avg_sq"].copy_(stacked(f"adam.v.{n}"))

    def synchronize(self) -> None:
        tc.synchronize(self.device)

    def device_memory(self) -> dict[str, float]:
        memory = tc.device_memory(self.device)
        if self.device.type == "cuda":
            memory["capacity_bytes"] = float(torch.cuda.mem_get_info(self.device)[1])
        return memory

    def describe(self) -> dict[str, str]:
        """How the ensemble executes its step and eval, for the record."""
        step = {"vmap": "torch.func.vmap(functional_call) over params stacked on a member axis: every member's "
                        "forward+loss batched, the members' losses summed, one backward, one Adam",
                "sequential": "the members one after another, each its own module over row i of the stacked "
                              "params: forward+loss, autograd.grad copied into row i of the stacked .grad; "
                              "then one Adam"}[self.members]
        return {"arrangement": f"{self.members}-eager", "members": f"{self.members}-members", "step": step,
                "optimizer": f"{tc.adam_description(self.opt)} over the stacked params",
                "eval": "vmap, eager" if self.members == "vmap" else "member by member, eager",
                "ensemble": str(self.size), "denormals": self.denormals}


def _dense(t: torch.Tensor) -> torch.Tensor:
    """A copy with the standard strides: `.contiguous()` keeps a slice's stride on a size-1 axis (one
    member), and torch.compile guards on strides, so that would recompile after warm-up."""
    return t.clone(memory_format=torch.contiguous_format)
