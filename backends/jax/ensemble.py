"""The `jax` seed-ensemble engine: N members of one workload trained as ONE program (`--ensemble`).

The programs are backends/jax/ensemble_programs.py (the single engine's step, vmapped over the members)
or, with the engine option `members=sequential` (auto: on the CPU), ensemble_sequential.py (the members
one after another, each running the single engine's functions); this module places data and state on
the device, compiles ahead of time and converts the state.

* Member i walks train_x[perms[i]] in batches of 128 (the partial batch kept) with its own noise, from its
  own initial params, with its own Adam state (step count included): exactly its single-seed run.
* The dataset sits on the device once for all members. Each epoch uploads the (N, n) permutations and
  the noise (host arrays stacked (N, n, latent); for `--noise counter` only the (N,) seeds and epochs,
  the noise being generated inside the program) and runs ONE compiled executable (state donated); the
  N loss sums cross to the host once per epoch.
* `warmup()` compiles ahead of time everything the timed epochs and the evaluation use (epoch, eval and,
  for `--noise framework`, jax's noise draw), so no timed epoch compiles (tests/test_jax_ensemble.py).
  A noise source other than the run's, and the lockstep step, compile on first use.
* The engine option `epoch` is the single engine's (backends/jax/engine.py epoch_arrangement): scan, or
  a Python loop of jitted batch steps (auto: loop for a conv workload on the CPU).
* State: one neutral-layout dict per member, converted as the single engine does (flax_model.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from backends.base import Metrics, Noise, per_sample
from backends.jax import EPOCHS as JAX_EPOCHS, MEMBERS
from backends.jax.engine import device_memory, epoch_arrangement, resolve_device
from backends.jax.ensemble_programs import ensemble_programs
from backends.jax.ensemble_sequential import member_arrangement, sequential_programs
from backends.jax.programs import flax_model, make_adam
from harness.config import RunConfig
from harness.errors import HarnessError


class JaxEnsemble:
    """`jax --ensemble`: the jax engine's step over N members (vmapped, or one member after another), one
    jitted program per epoch, donated state."""

    name = "jax"
    epoch = "scan"  # set per run in setup() (engine option `epoch`)

    def setup(self, params: list[dict[str, np.ndarray]], train_x: np.ndarray, test_x: np.ndarray,
              config: RunConfig) -> None:
        if not params:
            raise HarnessError("an ensemble needs at least one member")
        jax.config.update("jax_default_matmul_precision",
                          "tensorfloat32" if config.precision == "tf32" else "highest")
        self.m, self.size, self.source = config.model, len(params), config.noise
        self.device = resolve_device(config.device)
        self.n, self.n_test = train_x.shape[0], test_x.shape[0]
        options = config.options(self.name)
        self.epoch = epoch_arrangement(options.get("epoch", JAX_EPOCHS[0]), self.device, self.m)
        members = member_arrangement(options.get("members", MEMBERS[0]), self.device.platform)
        self.fn = (sequential_programs if members == "sequential" else ensemble_programs)(
            self.m, make_adam, config.precision)
        self._exe: dict[tuple, jax.stages.Compiled] = {}
        self.train_x, self.test_x = self._put(train_x), self._put(test_x)
        self.set_state([{**p, **{f"adam.{mv}.{k}": np.zeros_like(v) for k, v in p.items() for mv in "mv"},
                         "adam.step": np.int64(0)} for p in params])

    # ---- protocol ----------------------------------------------------------------------------------

    def warmup(self) -> None:
        """AOT-compile what the run's epochs and evaluation use (for the run's noise source); runs nothing."""
        kind = "counter" if self.source == "counter" else "array"
        if self.epoch == "scan":
            self._program(("epoch", kind))
        else:
            for size in set(self.m.batch_sizes(self.n)):
                self._program(("batch", kind, size))
            for key in (("split",), ("stack",)) if self.fn.members == "sequential" else ():
                self._program(key)
        self._program(("eval", kind))
        if self.source == "framework":
            for n in {self.n, self.n_test}:
                self._program(("noise", n))

    def train_epoch(self, perms: np.ndarray, noises: list[Noise]) -> np.ndarray:
        perms = np.asarray(perms)
        if perms.shape != (self.size, self.n):
            raise HarnessError(f"permutations of shape {perms.shape} for {self.size} members of {self.n} samples")
        kind, noise_in = self._noise_in(noises, self.n)
        perms_d = self._put(perms.astype(np.int32))
        if self.epoch == "scan":
            self.state, totals = self._program(("epoch", kind))(self.state, self.train_x, perms_d, noise_in)
        else:
            totals = self._loop_epoch(kind, perms_d, noise_in)
        return np.asarray(jax.device_get(totals), np.float64) / self.n

    def evaluate(self, noises: list[Noise]) -> list[Metrics]:
        kind, noise_in = self._noise_in(noises, self.n_test)
        program, args = self._program(("eval", kind)), (self.state[0], self.test_x, noise_in)
        if self.fn.members == "vmap":
            at_mean, sampled = jax.device_get(program(*args))
        else:  # member by member: N pairs of sums
            at_mean, sampled = np.transpose(jax.device_get([program(*args, self._put(np.int32(i)))
                                                            for i in range(self.size)]))
        names = self.m.spec().metric_names
        return [per_sample(names, (at_mean[i], sampled[i]), self.n_test) for i in range(self.size)]

    def lockstep_step(self, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
        if np.shape(x)[0] != self.size or np.shape(eps)[0] != self.size:
            raise HarnessError(f"lockstep batches for {np.shape(x)[0]} members, noise for {np.shape(eps)[0]}; "
                               f"the ensemble has {self.size}")
        if self.fn.members == "vmap":
            self.state, losses = self.fn.step(self.state, self._put(x), self._put(eps))
        else:
            losses = self._each_member(lambda i, member: self.fn.step(member, self._put(x[i]), self._put(eps[i])))
        return np.asarray(jax.device_get(losses), np.float64)

    def get_state(self) -> list[dict[str, np.ndarray]]:
        params, (adam, *_) = jax.device_get(self.state)
        layout, states = flax_model(self.m), []
        for i in range(self.size):
            state: dict[str, np.ndarray] = {}
            for prefix, tree in (("", params), ("adam.m.", adam.mu), ("adam.v.", adam.nu)):
                member = layout.from_flax(jax.tree.map(lambda a: a[i], tree))
                state.update({prefix + k: v.astype(np.float32, copy=False) for k, v in member.items()})
            state["adam.step"] = np.array(int(adam.count[i]), dtype=np.int64)
            states.append(state)
        return states

    def set_state(self, states: list[dict[str, np.ndarray]]) -> None:
        if len(states) != self.size:
            raise HarnessError(f"{len(states)} member states for an ensemble of {self.size}")
        to_flax, order = flax_model(self.m).to_flax, self.m.param_order()

        def stacked(prefix: str) -> dict:
            # to_flax and np.stack copy, so later changes to the caller's arrays cannot reach device buffers
            trees = [to_flax({k: np.asarray(s[prefix + k], np.float32) for k in order}) for s in states]
            return jax.tree.map(lambda *members: self._put(np.stack(members)), *trees)

        params = stacked("")
        count = self._put(np.array([int(s["adam.step"]) for s in states], np.int32))
        adam = optax.ScaleByAdamState(count=count, mu=stacked("adam.m."), nu=stacked("adam.v."))
        # optax.adam = chain(scale_by_adam, scale_by_learning_rate); the latter's state holds no arrays.
        _, *rest = jax.eval_shape(make_adam(self.m).init, jax.tree.map(lambda a: a[0], params))
        self.state = (params, (adam, *rest))

    def describe(self) -> dict[str, str]:
        """How this ensemble executes, for the record (backend_info)."""
        members, name = self.fn.members, {"scan": "jit-scan-epoch", "loop": "jit-step-loop"}[self.epoch]
        return {"arrangement": f"{members}-{name}", "members": f"{members}-members",
                "step": self.fn.describe[self.epoch].format(size=self.size),
                "optimizer": f"optax.adam, one state per member ({'vmapped' if members == 'vmap' else 'in turn'})",
                "eval": self.fn.describe["eval"], "ensemble_size": str(self.size),
                "noise": {"counter": "counter noise generated inside the programs from (seed, epoch)",
                          "framework": "jax.random.normal per member seed, vmapped"}.get(
                              self.source, "host arrays, stacked and uploaded once per pass")}

    def synchronize(self) -> None:
        jax.block_until_ready(self.state)

    def device_memory(self) -> dict[str, float]:
        return device_memory(self.device, capacity=True)

    # ---- helpers -----------------------------------------------------------------------------------

    def _noise_in(self, noises: list[Noise], n: int) -> tuple[str, object]:
        """The members' noise of one pass over n samples on the device, and its kind (ensemble_programs)."""
        if len(noises) != self.size:
            raise HarnessError(f"noise for {len(noises)} members; the ensemble has {self.size}")
        sources = {"array" if z.eps is not None else "counter" if z.counter is not None else "framework"
                   for z in noises}
        if len(sources) != 1:
            raise HarnessError(f"ensemble noise: every member needs the same source, got {', '.join(sorted(sources))}")
        source = sources.pop()
        if source == "array":
            return "array", self._put(np.stack([np.asarray(z.eps, np.float32) for z in noises]))
        if source == "counter":
            return "counter", tuple(self._put(np.array([z.counter[j] for z in noises], np.uint32)) for j in (0, 1))
        return "array", self._program(("noise", n))(self._put(np.array([z.seed for z in noises], np.int32)))

    def _program(self, key: tuple) -> jax.stages.Compiled:
        """The AOT-compiled executable of `key` (("epoch", kind), ("batch", kind, size), ("eval", kind),
        ("noise", n), or sequential's ("split",) and ("stack",)), compiled on first use."""
        if key not in self._exe:
            self._exe[key] = self._lower(key).compile()
        return self._exe[key]

    def _lower(self, key: tuple) -> jax.stages.Lowered:
        if key in (("split",), ("stack",)):
            return self.fn.split.lower(self.state) if key[0] == "split" else self.fn.stack.lower(self._members_spec())
        what, arg = key[0], key[1]
        if what == "noise":
            return self.fn.noise.lower(self._spec((self.size,), jnp.int32), arg)
        n = self.n_test if what == "eval" else self.n
        noise = (self._spec((self.size, n, self.m.latent_dim), jnp.float32) if arg == "array"
                 else (self._spec((self.size,), jnp.uint32),) * 2)
        index = self._spec((), jnp.int32)
        if what == "eval":
            return self.fn.evaluate[arg].lower(self.state[0], self.test_x, noise,
                                               *([index] if self.fn.members == "sequential" else []))
        perms = self._spec((self.size, self.n), jnp.int32)
        if what == "epoch":
            return self.fn.epoch[arg].lower(self.state, self.train_x, perms, noise)
        if self.fn.members == "vmap":
            return self.fn.batch_step[arg].lower(self.state, self._spec((self.size,), jnp.float32), self.train_x,
                                                 perms, noise, index, key[2])
        return self.fn.batch_step[arg].lower(self._members_spec()[0], self._spec((), jnp.float32), self.train_x,
                                             perms, noise, index, key[2], index)

    def _loop_epoch(self, kind: str, perms_d: jax.Array, noise_in) -> object:
        """epoch=loop: the batch steps in a Python loop (sequential: each member's in turn); the loss totals."""
        sizes = self.m.batch_sizes(self.n)
        batches = [(self._program(("batch", kind, size)), self._put(np.int32(sum(sizes[:j]))))
                   for j, size in enumerate(sizes)]

        def steps(state, total, *member):  # the batch steps of the whole ensemble, or of member i
            for program, start in batches:
                state, total = program(state, total, self.train_x, perms_d, noise_in, start, *member)
            return state, total
        if self.fn.members == "vmap":
            self.state, totals = steps(self.state, self._put(np.zeros(self.size, np.float32)))
            return totals
        return self._each_member(lambda i, member: steps(member, self._put(np.float32(0)), self._put(np.int32(i))))

    def _each_member(self, step) -> list:
        """members=sequential: split the state into its members, member i = step(i, member i) (returning
        (member, result)) in turn, stack them back; the results."""
        members, results = list(self._program(("split",))(self.state)), []
        for i in range(self.size):
            members[i], result = step(i, members[i])
            results.append(result)
        self.state = self._program(("stack",))(tuple(members))
        return results

    def _members_spec(self) -> tuple:
        """The shapes of the split members' states, on this engine's device."""
        return jax.tree.map(lambda a: self._spec(a.shape, a.dtype), jax.eval_shape(self.fn.split, self.state))

    def _put(self, a) -> jax.Array:
        """NumPy -> this engine's device; floats become float32 whatever the caller passed."""
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype(np.float32, copy=False)
        return jax.device_put(a, self.device)

    def _spec(self, shape: tuple[int, ...], dtype) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=jax.sharding.SingleDeviceSharding(self.device))
