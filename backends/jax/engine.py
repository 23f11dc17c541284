"""The `jax` engine: the workload's Flax NNX model trained with Optax Adam, one jitted lax.scan per epoch.

The programs themselves (the model, the loss, the scan epoch, Adam) are backends/jax/programs.py; this
module places the data and state on the device, compiles ahead of time and converts the state.

* The dataset sits on the device; each epoch uploads the permutation (int32) and the epoch's noise
  once and runs ONE compiled executable (params and Adam state donated, the loss summed on the device,
  crossing to the host once per epoch).
* `warmup()` compiles ahead of time (`jit(...).lower(...).compile()`) the epoch for this n and the
  evaluation, and stores the executables, so no timed epoch compiles anything (tests check this).
  The lockstep step and `decode` are not part of a timed run and compile on first use.
* Compile (warmup) cost grows with the number of distinct step shapes (the scan body and the tail),
  plus the noise and evaluation programs; `compile_seconds` in every results.json is its measure.
* float32 everywhere (matmul precision 'highest') unless the run asks for tf32, or for bf16 (the model on
  bfloat16 copies of params and inputs, everything else float32: backends/jax/programs.py).
* State: the harness's neutral layout (weights (out, in), `adam.m.*`, `adam.v.*`, `adam.step`) converts
  to and from Flax's (kernels (in, out)) through the workload's flax_model.py (`to_flax`, `from_flax`).

The Python-loop alternative is the engine option `epoch=loop` (`--engine-option jax.epoch=loop`), which
benchmarks/engine_variants.py measures against the scan.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from backends.jax import EPOCHS as JAX_EPOCHS
from backends.base import Metrics, Noise, per_sample
from backends.jax.programs import flax_model, make_adam, programs
from harness.config import ModelConfig, RunConfig
from harness.errors import HarnessError

# True float32 matmuls by default (setup() switches to TF32 only when a run asks for it). Set at import
# as well as in setup() because the worker records jax's config (backends/info.py) before setup.
jax.config.update("jax_default_matmul_precision", "highest")


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


def device_memory(device: jax.Device, capacity: bool = False) -> dict[str, float]:
    """Peak and in-use bytes of a GPU ({} on the CPU); with `capacity`, also what it can hold."""
    if device.platform == "cpu":
        return {}
    stats = device.memory_stats() or {}
    out = {"peak_bytes": float(stats.get("peak_bytes_in_use", 0)), "in_use_bytes": float(stats.get("bytes_in_use", 0))}
    if capacity and "bytes_limit" in stats:
        out["capacity_bytes"] = float(stats["bytes_limit"])
    return out


def epoch_arrangement(option: str, device: jax.Device, m: ModelConfig) -> str:
    """'scan' or 'loop' for the engine option `epoch` ('auto', 'scan' or 'loop').

    auto = scan (one program per epoch, no per-batch dispatch), except for a convolutional workload on
    the CPU: XLA:CPU runs the convolutions inside the scan's loop body far slower than the same step
    as a program of its own, so there a Python loop of jitted steps is the faster epoch (measured by
    benchmarks/jax_epoch_arrangement.py, committed in reports/jax-epoch-cpu).
    """
    if option not in JAX_EPOCHS:
        raise HarnessError(f"jax epoch {option!r}: choose from {', '.join(JAX_EPOCHS)}")
    if option != "auto":
        return option
    return "loop" if device.platform == "cpu" and m.spec().convolutional else "scan"


class JaxBackend:
    """`jax`: Flax NNX + Optax adam, a jitted lax.scan epoch (or a loop of jitted steps), donated state."""

    name = "jax"
    epoch = "scan"  # set per run in setup() (engine option `epoch`); the class default describes the usual case

    def setup(self, params, train_x, test_x, config: RunConfig) -> None:
        # Read at trace time, so it must be set before anything is traced.
        jax.config.update("jax_default_matmul_precision",
                          "tensorfloat32" if config.precision == "tf32" else "highest")
        self.m = config.model
        self.device = resolve_device(config.device)
        self.n = train_x.shape[0]
        self.own_noise = config.noise == "framework"
        self.counter_noise = config.noise == "counter"
        self.epoch = epoch_arrangement(config.options(self.name).get("epoch", JAX_EPOCHS[0]), self.device, self.m)
        self.fn = programs(self.m, make_adam, config.precision)  # this module's make_adam: profile_backends.py swaps it
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
        # `--noise counter`: the harness's counter noise, generated on the device from (seed, epoch)
        u32 = self._spec((), jnp.uint32)
        self._counter_exe = {n: self.fn.counter_noise.lower(u32, u32, n).compile()
                             for n in ({self.n, n_test} if self.counter_noise else ())}
        self._compiled = True

    def _compile_training(self) -> None:
        perm_spec = self._spec((self.n,), jnp.int32)
        if self.epoch == "scan":
            self._epoch_exe = self.fn.epoch.lower(self.state, self.train_x, perm_spec, self._eps_spec(self.n)).compile()
            return
        # loop: one executable per distinct batch size (the full batch and the kept partial one)
        args = (self.state, self._spec((), jnp.float32), self.train_x, perm_spec, self._eps_spec(self.n),
                self._spec((), jnp.int32))
        self._batch_exe = {size: self.fn.batch_step.lower(*args, size).compile()
                           for size in set(self.m.batch_sizes(self.n))}

    def train_epoch(self, perm: np.ndarray, noise: Noise) -> float:
        if not self._compiled:
            self.warmup()
        if len(perm) != self.n:
            raise HarnessError(f"permutation of length {len(perm)} for a training set of {self.n}")
        perm_d, eps = self._put(perm.astype(np.int32)), self._noise(noise, self.n)
        if self.epoch == "scan":
            self.state, total = self._epoch_exe(self.state, self.train_x, perm_d, eps)
            return float(total) / self.n
        total, start = self._put(np.float32(0)), 0
        for size in self.m.batch_sizes(self.n):
            self.state, total = self._batch_exe[size](self.state, total, self.train_x, perm_d, eps,
                                                      self._put(np.int32(start)))
            start += size
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
        step = {"scan": ("jit-scan-epoch", "one jitted, AOT-compiled program per epoch: lax.scan over the full "
                                           "batches, then the partial batch; params and Adam state donated"),
                "loop": ("jit-step-loop", "a Python loop over the batches, one jitted, AOT-compiled step per "
                                          "batch (one executable per batch size); params, Adam state and the "
                                          "loss total donated")}[self.epoch]
        return {"arrangement": step[0], "step": step[1], "optimizer": "optax.adam", "eval": "jitted, AOT-compiled"}

    def synchronize(self) -> None:
        jax.block_until_ready(self.state)

    def device_memory(self) -> dict[str, float]:
        return device_memory(self.device)

    # ---- helpers -----------------------------------------------------------------------------------

    def _put(self, a) -> jax.Array:
        """NumPy -> this backend's device; floats become float32 whatever the caller passed."""
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype(np.float32, copy=False)
        return jax.device_put(a, self.device)

    def _noise(self, noise: Noise, n: int) -> jax.Array:
        """The pass's noise on the device: the harness's array, (`--noise counter`) the harness's counter
        noise generated on the device, or (`--noise framework`) jax's own draw."""
        if noise.eps is not None:
            return self._put(noise.eps)
        if noise.counter is not None:
            seed, epoch = (self._put(np.uint32(v)) for v in noise.counter)
            return self._counter_exe[n](seed, epoch)
        return self._noise_exe[n](self._put(np.int32(noise.seed)))

    def _eps_spec(self, n: int) -> jax.ShapeDtypeStruct:
        return self._spec((n, self.m.latent_dim), jnp.float32)

    def _spec(self, shape: tuple[int, ...], dtype) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=jax.sharding.SingleDeviceSharding(self.device))
