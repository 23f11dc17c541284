"""What the PyTorch engines share: the workload's model, the Bernoulli VAE loss, devices and state.

The model comes from the workload (workloads/<name>/torch_model.py); its state_dict is the neutral
layout, so params and Adam state convert by name.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backends.torch import counter_noise
from backends.torch import precision as torch_precision
from backends.base import Metrics, Noise, per_sample
from harness.config import ModelConfig, RunConfig
from harness.counter_noise import STREAM_REPARAM
from harness.errors import HarnessError

EVAL_CHUNK = 10_000  # the whole test set in one pass: eval needs no autograd and fits easily


def build_model(m: ModelConfig) -> nn.Module:
    """The workload's torch model (workloads/<name>/torch_model.py): encode, decode_logits, forward(x, eps)."""
    return m.spec().module("torch_model").Model(m)


def placed_model(config: RunConfig, params: dict[str, np.ndarray]) -> tuple[torch.device, nn.Module]:
    """Threads and precision as the run asks, then the workload's model on its device, holding `params`."""
    configure(config)
    device = resolve_device(config.device)
    model = build_model(config.model).to(device)
    load_params(model, params)
    return device, model


def loss_sum(logits, x, mu, logvar):
    """Batch sum of BCE + analytic KL, pytorch/examples' loss_function.

    BCE is computed from the logits (softplus form), which equals BCE(sigmoid(logits), x) exactly in
    real arithmetic and avoids the log(0) clamp of F.binary_cross_entropy in float32.
    """
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        if torch.version.cuda is None:
            raise HarnessError(f"device {name!r} requested but this torch ({torch.__version__}) is a CPU-only "
                               "build; install with -c constraints-cuda.txt -e '.[cuda]' or use --device cpu")
        raise HarnessError(f"device {name!r} requested but torch sees no CUDA GPU")
    return torch.device(name)


def set_denormals(mode: str) -> str:
    """Flush subnormal floats to zero on the CPU ("flush", FTZ/DAZ) or keep them ("keep"); the record's text.

    Why: Adam's first moment of a weight whose gradient stays zero for hundreds of steps (a pixel that
    is rarely on) decays through the subnormal range, and x86 arithmetic on subnormals is many times
    slower. XLA:CPU flushes them, so jax never meets them; "flush" gives torch the same arithmetic. It
    changes only values below 1.2e-38. The flag is per thread and torch's CPU threads copy it when they
    start, so it must be set before torch's first parallel operation (a backend's setup, first thing
    in its child process); the record says so when it was not.
    """
    if mode == "flush" and not torch.set_flush_denormal(True):
        raise HarnessError("denormals=flush: this CPU cannot flush subnormals (no SSE3); use denormals=keep")
    if mode == "keep":
        torch.set_flush_denormal(False)
        return "kept (IEEE subnormals)"
    if not _flushed_on_every_thread():
        return "flushed on some CPU threads only: torch's thread pool had started before the flag was set"
    return "flushed to zero on the CPU (FTZ/DAZ, as XLA:CPU)"


def _flushed_on_every_thread() -> bool:
    """Whether an elementwise product spread over all of torch's CPU threads reads subnormals as zero."""
    # Bit pattern 1 is the smallest subnormal; made from integers, because converting 1e-39 to float32
    # would itself be flushed. 65,536 a thread: above torch's grain size, so every thread gets a share.
    x = torch.ones(torch.get_num_threads() * 65_536, dtype=torch.int32).view(torch.float32)
    return not bool((x * 1.0).any())


def configure(config: RunConfig) -> None:
    """Threads as the harness resolved them; float32 means float32 (TF32 only when asked for)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch_precision.set_tf32(config.precision == "tf32")  # one TF32 API per process (torch_precision)


def make_adam(model: nn.Module, m: ModelConfig, device: torch.device, **kw) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=m.learning_rate, betas=(m.beta1, m.beta2),
                            eps=m.adam_eps, **kw)


def load_params(model: nn.Module, params: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(np.ascontiguousarray(params[name], dtype=np.float32)))


def get_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """Params and Adam state in the framework-neutral layout (zeros and step 0 before the first step)."""
    state = {n: p.detach().cpu().numpy().copy() for n, p in model.named_parameters()}
    step = 0
    for n, p in model.named_parameters():
        s = opt.state.get(p, {})
        state[f"adam.m.{n}"] = s["exp_avg"].cpu().numpy().copy() if s else np.zeros(p.shape, np.float32)
        state[f"adam.v.{n}"] = s["exp_avg_sq"].cpu().numpy().copy() if s else np.zeros(p.shape, np.float32)
        step = int(s["step"]) if s else 0
    state["adam.step"] = np.array(step, dtype=np.int64)
    return state


def set_state(model: nn.Module, opt: torch.optim.Optimizer, state: dict[str, np.ndarray]) -> None:
    """Restore params and Adam state by copying the values in place into the existing tensors.

    In place, because compiled graphs and captured CUDA graphs hold these very tensors: replacing them
    would leave the graphs updating stale copies. Adam creates its state lazily on its first step; if
    it has none yet, `create_adam_state` first creates it where and how Adam itself would.
    """
    load_params(model, state)
    if any(not opt.state.get(p) for p in model.parameters()):
        create_adam_state(opt)
    step = int(state["adam.step"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            s = opt.state[p]
            s["step"].fill_(step)
            s["exp_avg"].copy_(torch.from_numpy(np.ascontiguousarray(state[f"adam.m.{n}"], np.float32)))
            s["exp_avg_sq"].copy_(torch.from_numpy(np.ascontiguousarray(state[f"adam.v.{n}"], np.float32)))


def create_adam_state(opt: torch.optim.Optimizer) -> None:
    """Give every parameter without state a zero Adam state, placed by the optimiser's own rules.

    Goes through `load_state_dict` rather than building tensors here: torch then puts each tensor on
    the device, dtype and layout its Adam variant expects (a plain number for `step` becomes a
    float32 tensor on the param's device for fused or capturable Adam, a CPU scalar otherwise), so the
    rule follows torch instead of being copied from it. (A zero-gradient step would also create the
    state but runs the update, and a custom `step` may keep its state elsewhere.) Existing state
    tensors are passed through unchanged, so they keep their identity.
    """
    params = [p for group in opt.param_groups for p in group["params"]]
    if any(g.get("amsgrad") for g in opt.param_groups):
        raise ValueError("amsgrad has no place in the framework-neutral state layout")
    sd = opt.state_dict()
    sd["state"] = {i: opt.state.get(p) or {
        "step": 0.0,
        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
    } for i, p in enumerate(params)}
    opt.load_state_dict(sd)


def adam_description(opt: torch.optim.Optimizer) -> str:
    """E.g. 'Adam(fused=True, capturable=True)': the implementation flags that are switched on."""
    group = opt.param_groups[0]
    flags = [f"{k}=True" for k in ("fused", "foreach", "capturable") if group.get(k)]
    return f"{type(opt).__name__}({', '.join(flags)})"


def noise_tensor(noise: Noise, n: int, latent: int, device: torch.device) -> torch.Tensor:
    """The pass's noise on the device: the harness's array, the counter-based noise generated on the
    device (`--noise counter`), or (`--noise framework`) torch's own draw."""
    if noise.eps is not None:
        return torch.from_numpy(np.ascontiguousarray(noise.eps, np.float32)).to(device)
    if noise.counter is not None:
        seed, epoch = noise.counter
        return counter_noise.normals(seed, epoch, STREAM_REPARAM, 0, n, latent, device)
    g = torch.Generator(device=device).manual_seed(noise.seed)
    return torch.randn(n, latent, generator=g, device=device)


def mixed(x: torch.Tensor, precision: str):
    """The bf16 recipe's context: autocast runs the matrix products and convolutions in bfloat16 (weights,
    gradients and Adam state stay float32); a no-op for float32 and tf32."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def forward_loss(model: nn.Module, x, eps, precision: str = "float32"):
    """The batch-sum training loss: the model under `mixed`, the loss itself in float32."""
    with mixed(x, precision):
        logits, mu, logvar = model(x, eps)
    return loss_sum(logits.float(), x, mu.float(), logvar.float())


def eval_losses(model: nn.Module, x, eps, precision: str = "float32"):
    """Batch-sum losses with z = mu and with z = mu + eps * std: the encoder runs once, the decoder twice."""
    with mixed(x, precision):
        mu, logvar = model.encode(x)
        z = mu + eps * torch.exp(0.5 * logvar)
        at_mean, sampled = model.decode_logits(mu), model.decode_logits(z)
    mu, logvar = mu.float(), logvar.float()
    return loss_sum(at_mean.float(), x, mu, logvar), loss_sum(sampled.float(), x, mu, logvar)


@torch.no_grad()
def evaluate(model: nn.Module, test_x: torch.Tensor, noise: Noise, m: ModelConfig, losses=None,
             precision: str = "float32") -> Metrics:
    """Per-sample test loss with z = mu and with one sampled z, over the whole test set.

    `losses` replaces eval_losses (torch-compile passes its compiled version); the test set goes in
    chunks of EVAL_CHUNK (all of it at once by default: eval needs no autograd memory).
    """
    losses = (lambda x, e: eval_losses(model, x, e, precision)) if losses is None else losses
    n = test_x.shape[0]
    eps = noise_tensor(noise, n, m.latent_dim, test_x.device)
    total_mu = torch.zeros((), device=test_x.device)
    total_sampled = torch.zeros((), device=test_x.device)
    for i in range(0, n, EVAL_CHUNK):
        loss_mu, loss_sampled = losses(test_x[i:i + EVAL_CHUNK], eps[i:i + EVAL_CHUNK])
        total_mu += loss_mu
        total_sampled += loss_sampled
    return per_sample(m.spec().metric_names, (total_mu, total_sampled), n)


@torch.no_grad()
def decode(model: nn.Module, z: np.ndarray) -> np.ndarray:
    dev = next(model.parameters()).device
    return torch.sigmoid(model.decode_logits(torch.from_numpy(z.astype(np.float32)).to(dev))).cpu().numpy()


def device_memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"peak_bytes": float(torch.cuda.max_memory_allocated(device)),
            "in_use_bytes": float(torch.cuda.memory_allocated(device))}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
