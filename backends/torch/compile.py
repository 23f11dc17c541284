"""torch.compile backend: the eager backend's step and eval compiled, arranged per device and mode.

Three arrangements; `describe()` reports the one a run used:

- `cuda-graph-step` (CUDA; modes without CUDA graph trees: default, max-autotune-no-cudagraphs):
  Inductor kernels for forward+loss+backward, fused capturable Adam, and the whole step (zero_grad,
  forward, backward, Adam) captured by hand as ONE CUDA graph per batch size. Each batch is gathered
  into the graph's static inputs and the graph replayed. On a GPU this small model is bound by host
  work per kernel (Python, dispatch, guards); one replay per step removes all of it.
- `cudagraph-trees` (CUDA; reduce-overhead, max-autotune): forward+loss compiled in that mode, so
  torch.compile's own CUDA graph trees run forward and backward, and eager fused Adam. Adam is not
  compiled: graph trees start a new generation at every compiled call made with no backward pending,
  so a separately compiled optimizer step overwrites the outputs of the forward graph.
- `compiled-step` (CPU, every mode; CUDA graphs do not exist there): forward+loss compiled
  (AOTAutograd compiles the backward with it) and `optimizer.step()` compiled as its own graph.

Shapes are static (`dynamic=False`): the run uses the full batch, the final partial batch
(60000 = 468 * 128 + 96, kept as in pytorch/examples) and the eval pass, and `warmup()` compiles (and
captures) each of them once before timing starts, on a saved copy of the state that is restored in
place afterwards. Nothing recompiles after that (tests/test_backends.py checks dynamo's counters).
"""
from __future__ import annotations

import numpy as np
import torch

from backends.torch import COMPILE_MODES
from backends.torch import common as tc
from backends.base import Noise
from backends.torch.eager import TorchEagerBackend

TREE_MODES = ("reduce-overhead", "max-autotune")  # the modes in which torch.compile uses CUDA graph trees
TREE_WARMUP_CALLS = 3  # graph trees run a shape eagerly first, record it on a later call, then replay
GRAPH_WARMUP_STEPS = 3  # plain runs before a capture, so compiling, autotuning and lazy set-up happen outside it


def arrangement(device: str, mode: str) -> str:
    """The step arrangement of a device and compile mode (see the module docstring)."""
    if not device.startswith("cuda"):
        return "compiled-step"
    return "cudagraph-trees" if mode in TREE_MODES else "cuda-graph-step"


class StepGraphs:
    """A training step captured as CUDA graphs, one per batch size, each with static inputs and loss.

    `step(x, eps)` must touch only its inputs, the model, the optimizer and their gradients, and return
    the batch loss. Capturing runs the step GRAPH_WARMUP_STEPS times first, which trains: the caller
    saves the training state before `capture` and restores it (in place) afterwards. The batch size is
    x.shape[batch_axis]: 1 for a seed ensemble's (members, batch, features) batches.
    """

    def __init__(self, step, device: torch.device, batch_axis: int = 0):
        self.step, self.device, self.batch_axis, self.graphs = step, device, batch_axis, {}

    def __contains__(self, size: int) -> bool:
        return size in self.graphs

    def capture(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        """Capture the step for batches of x.shape[batch_axis] samples; x and eps are example inputs."""
        static_x, static_eps = x.clone(), eps.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device):
            # Warm-up and capture share one side stream: capture needs a non-default stream, and cuBLAS
            # creates its per-stream handle and workspace during warm-up instead of mid-capture.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(GRAPH_WARMUP_STEPS):
                    self.step(static_x, static_eps)
            with torch.cuda.graph(graph, stream=stream):
                loss = self.step(static_x, static_eps)
            torch.cuda.current_stream().wait_stream(stream)
        self.graphs[x.shape[self.batch_axis]] = (graph, static_x, static_eps, loss)

    def inputs(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The static (x, eps) of the graph for `size`: write the next batch into them, then `replay`."""
        _, static_x, static_eps, _ = self.graphs[size]
        return static_x, static_eps

    def replay(self, size: int) -> torch.Tensor:
        """Run one step on what the static inputs hold; the returned loss is overwritten by the next replay."""
        graph, _, _, loss = self.graphs[size]
        graph.replay()
        return loss


class TorchCompileBackend(TorchEagerBackend):
    """`torch-compile`: the eager backend's step and eval under torch.compile."""

    name = "torch-compile"

    def setup(self, params, train_x, test_x, config) -> None:
        self.mode = config.options(self.name).get("mode", COMPILE_MODES[0])
        self.arrangement = arrangement(config.device, self.mode)
        self.graphs: StepGraphs | None = None
        super().setup(params, train_x, test_x, config)
        model = self.model
        precision = config.precision
        self.eval_fn = torch.compile(lambda x, eps: tc.eval_losses(model, x, eps, precision), mode=self.mode,
                                     dynamic=False)

    def make_optimizer(self) -> torch.optim.Adam:
        # fused: torch's one-kernel-per-parameter Adam, cheaper than the kernel Inductor generates for the
        # foreach implementation. capturable keeps the step count on the GPU, so a graph can advance it.
        capturable = {"capturable": True} if self.arrangement == "cuda-graph-step" else {}
        return tc.make_adam(self.model, self.m, self.device, fused=True, **capturable)

    def build_step(self):
        model, opt, precision = self.model, self.opt, self.precision

        @torch.compile(mode=self.mode, dynamic=False)
        def loss_fn(xb, eb):
            return tc.forward_loss(model, xb, eb, precision)

        if self.arrangement == "cuda-graph-step":
            self.plain_step = _graphable_step(opt, loss_fn)
            self.graphs = StepGraphs(self.plain_step, self.device)
            return self._graph_step
        if self.arrangement == "cudagraph-trees":
            return _tree_step(opt, loss_fn)

        @torch.compile(mode=self.mode, dynamic=False)
        def opt_step():  # as in the PyTorch recipe "Compiling the optimizer"
            opt.step()

        return _compiled_step(opt, loss_fn, opt_step)

    def _graph_step(self, xb: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """One step by graph replay (lockstep parity goes through here too)."""
        self._ensure_graph(xb, eb)
        static_x, static_eps = self.graphs.inputs(xb.shape[0])
        static_x.copy_(xb)
        static_eps.copy_(eb)
        return self.graphs.replay(xb.shape[0])

    def _ensure_graph(self, xb: torch.Tensor, eb: torch.Tensor) -> None:
        """Capture the graph of this batch size if warmup() did not (e.g. parity, which skips warm-up)."""
        if xb.shape[0] not in self.graphs:
            saved = self.get_state()
            self.graphs.capture(xb, eb)
            self.set_state(saved)

    def warmup(self) -> None:
        saved = self.get_state()
        calls = TREE_WARMUP_CALLS if self.arrangement == "cudagraph-trees" else 1
        for size in sorted(set(self.m.batch_sizes(self.train_x.shape[0]))):
            xb = self.train_x[:size]
            eb = torch.zeros(size, self.m.latent_dim, device=self.device)
            if self.graphs is not None:
                if size not in self.graphs:
                    self.graphs.capture(xb, eb)
            else:
                for _ in range(calls):
                    self.step_fn(xb, eb)
        for _ in range(calls):
            self.evaluate(Noise(0))
        self.set_state(saved)  # in place: the captured graphs keep pointing at the live tensors
        self.synchronize()

    def train_epoch(self, perm: np.ndarray, noise: Noise) -> float:
        if self.graphs is None:
            return super().train_epoch(perm, noise)
        n, bs = len(perm), self.m.batch_size
        idx = torch.from_numpy(perm.astype(np.int64)).to(self.device)
        eps = tc.noise_tensor(noise, n, self.m.latent_dim, self.device)
        for size in {min(bs, n), n % bs or min(bs, n)}:  # capture any missing size before the loop
            self._ensure_graph(self.train_x[:size], eps[:size])
        total = torch.zeros((), device=self.device)
        for i in range(0, n, bs):
            rows = idx[i:i + bs]
            static_x, static_eps = self.graphs.inputs(len(rows))
            torch.index_select(self.train_x, 0, rows, out=static_x)  # gather straight into the static input
            static_eps.copy_(eps[i:i + bs])
            total += self.graphs.replay(len(rows))
        return float(total) / n

    def evaluate(self, noise: Noise):
        if self.arrangement == "cudagraph-trees":
            torch.compiler.cudagraph_mark_step_begin()
        return tc.evaluate(self.model, self.test_x, noise, self.m, losses=self.eval_fn)

    def describe(self) -> dict[str, str]:
        """How this run executes its training step and eval, for the record."""
        kernels = f"torch.compile(mode={self.mode!r})"
        step = {
            "cuda-graph-step": f"zero_grad, forward+loss+backward ({kernels} kernels) and Adam captured "
                               "by hand as one CUDA graph per batch size, replayed per batch",
            "cudagraph-trees": f"forward+loss+backward under {kernels} with its CUDA graph trees; Adam eager",
            "compiled-step": f"forward+loss+backward under {kernels}; Adam's step under {kernels} too",
        }[self.arrangement]
        return {"arrangement": self.arrangement, "step": step,
                "optimizer": tc.adam_description(self.opt), "eval": kernels, "denormals": self.denormals}


def _graphable_step(opt, loss_fn):
    def step(xb, eb):
        opt.zero_grad(set_to_none=False)  # a graph replays on fixed gradient buffers: zero them in place
        loss = loss_fn(xb, eb)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def _tree_step(opt, loss_fn):
    def step(xb, eb):
        torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(xb, eb)
        loss.backward()
        opt.step()
        return loss.detach().clone()  # the graph's output buffer is reused by its next replay
    return step


def _compiled_step(opt, loss_fn, opt_step):
    def step(xb, eb):
        loss = loss_fn(xb, eb)
        loss.backward()
        opt_step()
        opt.zero_grad(set_to_none=True)  # freed grads make the next backward write instead of accumulate
        return loss.detach()
    return step
