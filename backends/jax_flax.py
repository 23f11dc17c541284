"""JAX backend: the reference VAE as a Flax NNX module, trained with Optax Adam under `jax.jit`.

Why Flax NNX: it is the API the Flax docs recommend ("new users are encouraged to use Flax NNX";
Linen is kept for existing code). The model is an `nnx.Module`; for speed the training code uses NNX's
functional API: `nnx.split` once into a static graphdef and the parameters, and `nnx.merge` inside the
jitted functions (free at run time: it happens while tracing). Parameters live as a plain nested dict
{'fc1': {'kernel', 'bias'}, ...} because Flax 0.12 is replacing `nnx.State` with built-in dicts and
`nnx.merge` accepts them; a dict of arrays is also what Optax and donation want.

Speed:
* The dataset sits on the device; each epoch uploads the permutation (int32) and the epoch's noise
  once, and runs ONE compiled executable: `lax.scan` over the full batches, then the
  final partial batch (60000 = 468 * 128 + 96, kept like every backend) as one more step. Parameters and
  Adam state are donated, so XLA updates them in place; the loss is summed on the device and crosses
  to the host once per epoch.
* `warmup()` compiles ahead of time (`jit(...).lower(...).compile()`) the epoch for this n and the
  evaluation, and stores the executables, so no timed epoch compiles anything (tests check this).
  The lockstep step and `decode` are not part of a timed run and compile on first use.
* Scan vs a Python loop of jitted per-batch steps (`JaxLoopBackend`, kept to measure the choice): the
  loop pays host-side dispatch for every batch, the scan dispatches once per epoch and lets XLA keep
  the state in place across steps, so the scan does less work per epoch (the bigger win on a GPU,
  where launch overhead dominates). On a shared CPU the loop's wall time can still look better, as
  its extra host thread may win the process a larger share of the cores, so compare CPU seconds, not
  wall time, on such machines. Figures, once measured in a committed run: docs/performance.md.
* Compile (warmup) cost grows with the number of distinct step shapes (the scan body and the tail),
  plus the noise and evaluation programs; `compile_seconds` in every results.json is its measure.

Numerics match backends/torch_eager.py: float32 everywhere (matmul precision 'highest' unless the run
asks for tf32), BCE from logits in the softplus form, the harness's noise in permutation-position
order (jax.random.normal(key(seed), (n, latent)) under `--noise framework`), and torch.optim.Adam's update (bias correction, eps
outside the square root) as plain `optax.adam`. Checked, not assumed (tests/test_jax_backend.py):
it is torch.optim.Adam's formula, but it computes the bias correction 1 - b2**t in float32 from b2
rounded to float32 (0.999 -> 0.99900001287), so each update is slightly smaller than torch's, by a
relative amount that follows from that rounding (bounded by test_optax_bias_correction_is_float32).
That is far inside the lockstep tolerance, so the framework's own optimiser is kept rather than a
patched one. Weights come from the harness (Flax's initialisers never run: the module is built
abstractly with `nnx.eval_shape`);
Flax kernels are (in, out), so they are transposed to and from the neutral (out, in) layout.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from backends.base import Metrics, Noise, per_sample
from harness.config import ModelConfig, RunConfig
from harness.errors import HarnessError

# True float32 matmuls by default (setup() switches to TF32 only when a run asks for it). Set at import
# as well as in setup() because the worker records jax's config (backends/info.py) before setup.
jax.config.update("jax_default_matmul_precision", "highest")


def loss_sum(logits, x, mu, logvar):
    """Batch sum of BCE + analytic KL. softplus(l) - x*l is BCE(sigmoid(l), x) without log(0)."""
    bce = jnp.sum(jax.nn.softplus(logits) - x * logits)
    kld = -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar))
    return bce + kld


def resolve_device(name: str) -> jax.Device:
    """'cpu', 'cuda' or 'cuda:N' -> a jax.Device; a missing GPU is a one-line HarnessError."""
    if name == "cpu":
        return jax.devices("cpu")[0]
    if name == "cuda" or name.startswith("cuda:"):
        index_text = name.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise HarnessError(f"bad device {name!r}: use cuda or cuda:N")
        index = int(index_text)
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
        if index >= len(gpus):
            raise HarnessError(f"device {name!r} requested but jax sees {len(gpus)} GPU(s)")
        return gpus[index]
    raise HarnessError(f"unknown device {name!r} for the jax backend (use cpu, cuda or cuda:N)")


@dataclass(frozen=True)
class Programs:
    """The jitted functions of one model config. Built once per process (cached), so every backend
    instance shares jax's trace and compilation caches."""

    epoch: Callable      # (state, train_x, perm, eps) -> (state, loss sum); state donated
    evaluate: Callable   # (params, test_x, eps) -> (loss sum at z = mu, loss sum at sampled z)
    step: Callable       # (state, x, eps) -> (state, loss); state donated (lockstep mode)
    batch_step: Callable  # (state, total, train_x, perm, eps, start, size) -> (state, total); JaxLoopBackend
    noise: Callable      # (seed, n) -> jax's own eps, (n, latent), for `--noise framework`
    decode: Callable     # (params, z) -> sigmoid means


@functools.cache
def programs(m: ModelConfig) -> Programs:
    graphdef = nnx.split(abstract_model(m))[0]
    tx = make_adam(m)
    bs, latent = m.batch_size, m.latent_dim

    def noise(seed, n):
        return jax.random.normal(jax.random.key(seed), (n, latent), jnp.float32)

    def loss_fn(params, x, eps):
        model = nnx.merge(graphdef, params)  # tracing-time only: no cost in the compiled program
        mu, logvar = model.encode(x)
        logits = model.decode_logits(mu + eps * jnp.exp(0.5 * logvar))
        return loss_sum(logits, x, mu, logvar)

    def step(state, x, eps):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, x, eps)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def epoch(state, train_x, perm, eps):
        n = perm.shape[0]
        full = n // bs * bs

        def body(state, batch):
            idx, e = batch
            return step(state, jnp.take(train_x, idx, axis=0), e)

        state, losses = jax.lax.scan(
            body, state, (perm[:full].reshape(-1, bs), eps[:full].reshape(-1, bs, latent)))
        total = jnp.sum(losses)
        if n > full:  # the kept partial batch has a static shape: one more step in the same program
            state, loss = step(state, jnp.take(train_x, perm[full:], axis=0), eps[full:])
            total = total + loss
        return state, total

    def batch_step(state, total, train_x, perm, eps, start, size):
        idx = jax.lax.dynamic_slice_in_dim(perm, start, size)
        state, loss = step(state, jnp.take(train_x, idx, axis=0), jax.lax.dynamic_slice_in_dim(eps, start, size))
        return state, total + loss

    def evaluate(params, test_x, eps):
        model = nnx.merge(graphdef, params)
        mu, logvar = model.encode(test_x)  # encoder once, decoder twice
        at_mean = loss_sum(model.decode_logits(mu), test_x, mu, logvar)
        sampled = loss_sum(model.decode_logits(mu + eps * jnp.exp(0.5 * logvar)), test_x, mu, logvar)
        return at_mean, sampled

    def decode(params, z):
        return jax.nn.sigmoid(nnx.merge(graphdef, params).decode_logits(z))

    return Programs(
        epoch=jax.jit(epoch, donate_argnums=0),
        evaluate=jax.jit(evaluate),
        step=jax.jit(step, donate_argnums=0),
        batch_step=jax.jit(batch_step, donate_argnums=(0, 1), static_argnums=6),
        noise=jax.jit(noise, static_argnums=1),
        decode=jax.jit(decode),
    )


def flax_model(m: ModelConfig):
    """The workload's Flax module file (workloads/<name>/flax_model.py): Model, to_flax, from_flax."""
    return m.spec().module("flax_model")


def abstract_model(m: ModelConfig) -> nnx.Module:
    """The module's structure without running Flax's initialisers (the harness supplies the weights)."""
    return nnx.eval_shape(lambda: flax_model(m).Model(m, nnx.Rngs(0)))


def make_adam(m: ModelConfig) -> optax.GradientTransformation:
    """Plain optax.adam, as a JAX user writes it (see the module docstring for how it differs from torch)."""
    return optax.adam(m.learning_rate, b1=m.beta1, b2=m.beta2, eps=m.adam_eps)


class JaxBackend:
    """`jax`: Flax NNX + Optax adam, one jitted lax.scan per epoch with donated state, float32."""

    name = "jax"

    def setup(self, params, train_x, test_x, config: RunConfig) -> None:
        # Read at trace time, so it must be set before anything is traced.
        jax.config.update("jax_default_matmul_precision",
                          "tensorfloat32" if config.precision == "tf32" else "highest")
        self.m = config.model
        self.device = resolve_device(config.device)
        self.n = train_x.shape[0]
        self.own_noise = config.noise == "framework"
        self.fn = programs(self.m)
        self._compiled = False
        self.train_x = self._put(train_x)
        self.test_x = self._put(test_x)
        zeros = {f"adam.{mv}.{k}": np.zeros_like(v) for k, v in params.items() for mv in "mv"}
        self.set_state({**params, **zeros, "adam.step": np.int64(0)})

    # ---- protocol ----------------------------------------------------------------------------------

    def warmup(self) -> None:
        """AOT-compile the epoch (for this n) and the evaluation; lowering runs nothing."""
        self._compile_training()
        n_test = self.test_x.shape[0]
        self._eval_exe = self.fn.evaluate.lower(self.state[0], self.test_x, self._eps_spec(n_test)).compile()
        # jax's own noise only in `--noise framework` mode (by default the harness supplies the arrays)
        self._noise_exe = {n: self.fn.noise.lower(self._spec((), jnp.int32), n).compile()
                           for n in ({self.n, n_test} if self.own_noise else ())}
        self._compiled = True

    def _compile_training(self) -> None:
        self._epoch_exe = self.fn.epoch.lower(self.state, self.train_x, self._spec((self.n,), jnp.int32),
                                              self._eps_spec(self.n)).compile()

    def train_epoch(self, perm: np.ndarray, noise: Noise) -> float:
        if not self._compiled:
            self.warmup()
        if len(perm) != self.n:
            raise HarnessError(f"permutation of length {len(perm)} for a training set of {self.n}")
        self.state, total = self._epoch_exe(self.state, self.train_x, self._put(perm.astype(np.int32)),
                                            self._noise(noise, self.n))
        return float(total) / self.n

    def evaluate(self, noise: Noise) -> Metrics:
        if not self._compiled:
            self.warmup()
        sums = self._eval_exe(self.state[0], self.test_x, self._noise(noise, self.test_x.shape[0]))
        at_mean, sampled = jax.device_get(sums)  # one transfer for both numbers
        n = self.test_x.shape[0]
        return per_sample(self.m.spec().metric_names, (at_mean, sampled), n)

    def lockstep_step(self, x: np.ndarray, eps: np.ndarray) -> float:
        self.state, loss = self.fn.step(self.state, self._put(x), self._put(eps))
        return float(loss)

    def get_state(self) -> dict[str, np.ndarray]:
        params, (adam, *_) = jax.device_get(self.state)
        out: dict[str, np.ndarray] = {}
        layout = flax_model(self.m)
        for prefix, tree in (("", params), ("adam.m.", adam.mu), ("adam.v.", adam.nu)):
            out.update({prefix + k: v.astype(np.float32, copy=False) for k, v in layout.from_flax(tree).items()})
        out["adam.step"] = np.array(int(adam.count), dtype=np.int64)
        return out

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        to_flax = flax_model(self.m).to_flax

        def tree(prefix: str) -> dict:
            # to_flax copies, so later changes to the caller's arrays cannot reach device buffers.
            neutral = {k: np.asarray(state[prefix + k], np.float32) for k in self.m.param_order()}
            return jax.tree.map(self._put, to_flax(neutral))

        params = tree("")
        adam = optax.ScaleByAdamState(count=self._put(np.int32(state["adam.step"])),
                                      mu=tree("adam.m."), nu=tree("adam.v."))
        # optax.adam = chain(scale_by_adam, scale_by_learning_rate); the latter's state holds no arrays.
        _, *rest = jax.eval_shape(make_adam(self.m).init, params)
        self.state = (params, (adam, *rest))

    def decode(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn.decode(self.state[0], self._put(z)))

    def describe(self) -> dict[str, str]:
        """How this run executes its training epoch, for the record (backend_info)."""
        return {"arrangement": "jit-scan-epoch",
                "step": "one jitted, AOT-compiled program per epoch: lax.scan over the full batches, then the "
                        "partial batch; params and Adam state donated",
                "optimizer": "optax.adam", "eval": "jitted, AOT-compiled"}

    def synchronize(self) -> None:
        jax.block_until_ready(self.state)

    def device_memory(self) -> dict[str, float]:
        if self.device.platform == "cpu":
            return {}
        stats = self.device.memory_stats() or {}
        return {"peak_bytes": float(stats.get("peak_bytes_in_use", 0)),
                "in_use_bytes": float(stats.get("bytes_in_use", 0))}

    # ---- helpers -----------------------------------------------------------------------------------

    def _put(self, a) -> jax.Array:
        """NumPy -> this backend's device; floats become float32 whatever the caller passed."""
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype(np.float32, copy=False)
        return jax.device_put(a, self.device)

    def _noise(self, noise: Noise, n: int) -> jax.Array:
        """The pass's noise on the device: the harness's array, or (`--noise framework`) jax's own draw."""
        if noise.eps is not None:
            return self._put(noise.eps)
        return self._noise_exe[n](self._put(np.int32(noise.seed)))

    def _eps_spec(self, n: int) -> jax.ShapeDtypeStruct:
        return self._spec((n, self.m.latent_dim), jnp.float32)

    def _spec(self, shape: tuple[int, ...], dtype) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=jax.sharding.SingleDeviceSharding(self.device))


class JaxLoopBackend(JaxBackend):
    """The alternative epoch, kept to measure scan vs loop: a Python loop calling a jitted step per batch.

    Same batches, noise and step as JaxBackend, so the same numbers up to float rounding. Not
    registered in backends/__init__.py.
    """

    name = "jax-loop"

    def _compile_training(self) -> None:
        scalar = self._spec((), jnp.int32)
        args = (self.state, self._spec((), jnp.float32), self.train_x, self._spec((self.n,), jnp.int32),
                self._eps_spec(self.n), scalar)
        self._batch_exe = {size: self.fn.batch_step.lower(*args, size).compile()
                           for size in set(self.m.batch_sizes(self.n))}

    def train_epoch(self, perm: np.ndarray, noise: Noise) -> float:
        if not self._compiled:
            self.warmup()
        perm_d = self._put(perm.astype(np.int32))
        eps = self._noise(noise, self.n)
        total = self._put(np.float32(0))
        start = 0
        for size in self.m.batch_sizes(self.n):
            self.state, total = self._batch_exe[size](self.state, total, self.train_x, perm_d, eps,
                                                      self._put(np.int32(start)))
            start += size
        return float(total) / self.n
