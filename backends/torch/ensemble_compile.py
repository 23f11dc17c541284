"""torch-compile seed ensembles: TorchEnsemble's step under torch.compile, arranged as compile.py.

The vmapped loss is compiled (vmap inside the compiled function: torch rejects vmap over a compiled
function, pytorch#128711); AOTAutograd compiles its backward. The arrangements are compile.py's:

- `cuda-graph-step` (CUDA; default, max-autotune-no-cudagraphs): the whole batched step (zero_grad,
  forward+loss+backward of all members, fused capturable Adam over the stacked params) captured by
  hand as ONE CUDA graph per batch size with compile.py's StepGraphs, replayed per batch.
- `cudagraph-trees` (CUDA; reduce-overhead, max-autotune): the loss under torch.compile's CUDA graph
  trees, Adam eager.
- `compiled-step` (CPU): the loss compiled, Adam's step compiled as its own graph.

With `members=sequential` (the CPU's default, ensemble_members.py) the compiled function is one member's
loss (its module an argument: one graph for every member) and eval; cudagraph-trees has no sequential
arrangement (graph trees reuse a compiled forward's outputs from one call to the next).

Shapes are static: `warmup()` compiles (and captures) the full batch, the partial batch and the eval
chunks on a saved copy of the state, restored in place afterwards, so timed epochs never compile.
"""
from __future__ import annotations

import functools

import torch

from backends.torch import COMPILE_MODES
from backends.torch import compile as tcmp
from backends.torch import ensemble_members as em
from backends.torch.ensemble import TorchEnsemble
from backends.base import Noise
from harness.errors import HarnessError


class TorchCompileEnsemble(TorchEnsemble):
    """`torch-compile --ensemble`: the ensemble step and eval (vmapped, or member by member) under torch.compile."""

    name = "torch-compile"

    def setup(self, params, train_x, test_x, config) -> None:
        self.mode = config.options(self.name).get("mode", COMPILE_MODES[0])
        self.arrangement = tcmp.arrangement(config.device, self.mode)
        self.graphs: tcmp.StepGraphs | None = None
        super().setup(params, train_x, test_x, config)
        if self.sequential is not None and self.arrangement == "cudagraph-trees":
            raise HarnessError(f"torch-compile members=sequential has no {self.arrangement} arrangement (mode "
                               f"{self.mode!r}): use members=vmap, or another mode")

    def make_optimizer(self, **kw) -> torch.optim.Adam:
        # capturable keeps the step count on the GPU, so a captured graph can advance it
        capturable = {"capturable": True} if self.arrangement == "cuda-graph-step" else {}
        return super().make_optimizer(**kw, **capturable)

    def build_step(self):
        opt, batched_loss = self.opt, self.batched_loss

        @torch.compile(mode=self.mode, dynamic=False)
        def loss_fn(xb, eb):
            return batched_loss(xb, eb)

        member_loss = torch.compile(em.train_loss(self.precision), mode=self.mode, dynamic=False)
        forward_backward, zero = self.forward_backward(loss_fn, member_loss), self.sequential is None
        if self.arrangement == "cuda-graph-step":
            step = _step(opt, forward_backward, graphed=True, zero_grad=zero)
            self.graphs = tcmp.StepGraphs(step, self.device, batch_axis=1)
            return self._graph_step
        if self.arrangement == "cudagraph-trees":
            return _step(opt, forward_backward, trees=True)

        @torch.compile(mode=self.mode, dynamic=False)
        def opt_step():  # as in the PyTorch recipe "Compiling the optimizer"
            opt.step()

        return _step(opt, forward_backward, opt_step=opt_step, zero_grad=zero)

    def build_eval(self):
        if self.sequential is not None:
            member_eval = torch.compile(em.eval_losses(self.precision), mode=self.mode, dynamic=False)
            return functools.partial(self.sequential.eval_losses, member_eval)
        batched_eval = self.batched_eval

        @torch.compile(mode=self.mode, dynamic=False)
        def eval_fn(x, eps):
            return batched_eval(x, eps)

        return eval_fn

    def eval_call(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if self.arrangement == "cudagraph-trees":
            torch.compiler.cudagraph_mark_step_begin()
        return self.eval_fn(x, eps)

    def _graph_step(self, xb: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """One batched step by graph replay (lockstep goes through here too)."""
        size = xb.shape[1]
        self._ensure_graph(xb, eb)
        static_x, static_eps = self.graphs.inputs(size)
        static_x.copy_(xb)
        static_eps.copy_(eb)
        return self.graphs.replay(size)

    def _ensure_graph(self, xb: torch.Tensor, eb: torch.Tensor) -> None:
        """Capture the graph of this batch size if warmup() did not (capturing trains: state restored)."""
        if xb.shape[1] not in self.graphs:
            saved = self.get_state()
            self.graphs.capture(xb, eb)
            self.set_state(saved)

    def _example(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A contiguous (N, size, D) batch and zero (N, size, latent) noise, for compiling and capturing."""
        xb = self.train_x[:size].expand(self.size, -1, -1).contiguous()
        return xb, torch.zeros(self.size, size, self.m.latent_dim, device=self.device)

    def before_epoch(self, n: int) -> None:
        if self.graphs is not None:
            bs = self.m.batch_size
            for size in {min(bs, n), n % bs or min(bs, n)}:
                self._ensure_graph(*self._example(size))

    def run_batch(self, rows: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        if self.graphs is None:
            return super().run_batch(rows, eb)
        static_x, static_eps = self.graphs.inputs(rows.shape[1])
        self.gather(rows, out=static_x)  # straight into the graph's static input
        static_eps.copy_(eb)
        return self.graphs.replay(rows.shape[1])

    def warmup(self) -> None:
        saved = self.get_state()
        calls = tcmp.TREE_WARMUP_CALLS if self.arrangement == "cudagraph-trees" else 1
        for size in sorted(set(self.m.batch_sizes(self.train_x.shape[0]))):
            xb, eb = self._example(size)
            if self.graphs is not None:
                if size not in self.graphs:
                    self.graphs.capture(xb, eb)
            else:
                for _ in range(calls):
                    self.step_fn(xb, eb)
        for _ in range(calls):
            self.evaluate([Noise(0)] * self.size)
        self.set_state(saved)  # in place: the captured graphs keep pointing at the live tensors
        self.synchronize()

    def describe(self) -> dict[str, str]:
        """How the ensemble executes its step and eval, for the record."""
        kernels = f"torch.compile(mode={self.mode!r})"
        step = {
            "cuda-graph-step": f"zero_grad, vmapped forward+loss+backward of all members ({kernels} kernels) "
                               "and Adam over the stacked params captured as one CUDA graph per batch size",
            "cudagraph-trees": f"vmapped forward+loss+backward under {kernels} with its CUDA graph trees; "
                               "Adam eager",
            "compiled-step": f"vmapped forward+loss+backward under {kernels}; Adam's step under {kernels} too",
        }[self.arrangement]
        if self.sequential is not None:
            step = step.replace("vmapped forward+loss+backward", "member by member forward+loss+backward, each "
                                "member's gradients copied into the stacked .grad,")
        return {**super().describe(), "arrangement": f"{self.members}-{self.arrangement}", "step": step,
                "eval": f"{'vmap' if self.sequential is None else 'member by member'} under {kernels}"}


def _step(opt, forward_backward, opt_step=None, graphed: bool = False, trees: bool = False, zero_grad: bool = True):
    """The ensemble step: every member's gradient (forward_backward), one Adam; returns the (N,) losses.
    zero_grad False: the gradients are written, not accumulated, into buffers kept for the run (sequential)."""
    def step(xb, eb):
        if trees:
            torch.compiler.cudagraph_mark_step_begin()
        if graphed and zero_grad:
            opt.zero_grad(set_to_none=False)  # a graph replays on fixed gradient buffers: zero them in place
        losses = forward_backward(xb, eb)
        (opt_step or opt.step)()
        if zero_grad and not graphed:
            opt.zero_grad(set_to_none=True)
        return losses.clone() if trees else losses  # trees reuse their output buffers
    return step
