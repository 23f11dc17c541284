"""An engine of a framework the project does not ship, added the way docs/extending.md describes:
its own module (here, standing in for a `backends/numpy/` package) and one `register` call, nothing
under harness/. Loaded through VAE_BENCH_PLUGINS=tests.plugin_numpy by tests/test_plugin_engine.py.

`numpy-oracle` trains with the workload's float64 NumPy oracle (its hand-written backward pass) and
the oracle's Adam, so it needs no framework; its option `dtype` says whether the weights are kept in
float64 or rounded to float32 after every step.
"""
from __future__ import annotations

import numpy as np

import backends
from backends.base import Metrics, Noise, per_sample
from backends.spec import BackendSpec, Framework
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.verification.oracle import AdamState, adam_update

DTYPES = ("float64", "float32")  # the engine option `dtype`, default first

FRAMEWORK = Framework("numpy", "numpy", info=__name__)
ENGINE = BackendSpec(__name__, "NumpyOracleBackend", "numpy", "numpy",
                     "the workload's float64 NumPy oracle with the oracle's Adam (a test plugin)",
                     options={"dtype": DTYPES})


def versions() -> dict[str, str]:
    """What the child records about this framework (backends/info.py)."""
    return {"numpy": np.__version__}


class NumpyOracleBackend:
    """Trains any workload that has an oracle, on the CPU, in NumPy."""

    name = "numpy-oracle"

    def setup(self, params, train_x, test_x, config: RunConfig) -> None:
        if config.device != "cpu":
            raise HarnessError(f"{self.name} runs on the cpu only, not {config.device!r}")
        self.m, self.oracle = config.model, config.model.oracle()
        self.dtype = np.dtype(config.options(self.name).get("dtype", DTYPES[0]))
        self.train_x, self.test_x = train_x, test_x
        zeros = {f"adam.{mv}.{k}": np.zeros_like(v) for k, v in params.items() for mv in "mv"}
        self.set_state({**params, **zeros, "adam.step": np.int64(0)})

    def warmup(self) -> None:
        pass  # nothing is compiled

    def train_epoch(self, perm: np.ndarray, noise: Noise) -> float:
        eps, total, start = self._eps(noise, len(perm)), 0.0, 0
        for size in self.m.batch_sizes(len(perm)):
            total += self.lockstep_step(self.train_x[perm[start:start + size]], eps[start:start + size])
            start += size
        return total / len(perm)

    def evaluate(self, noise: Noise) -> Metrics:
        n = len(self.test_x)
        sums = (self.oracle.loss(self.params, self.test_x, None),
                self.oracle.loss(self.params, self.test_x, self._eps(noise, n)))
        return per_sample(self.m.spec().metric_names, sums, n)

    def lockstep_step(self, x: np.ndarray, eps: np.ndarray) -> float:
        value, grads = self.oracle.loss_and_grad(self.params, x, eps)
        params, self.adam = adam_update(self.params, grads, self.adam, self.m)
        self.params = {k: v.astype(self.dtype) for k, v in params.items()}
        return float(value)

    def get_state(self) -> dict[str, np.ndarray]:
        state = {k: np.asarray(v, np.float32) for k, v in self.params.items()}
        for prefix, moments in (("adam.m.", self.adam.m), ("adam.v.", self.adam.v)):
            state.update({prefix + k: np.asarray(v, np.float32) for k, v in moments.items()})
        state["adam.step"] = np.array(self.adam.step, dtype=np.int64)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        names = self.m.param_order()
        self.params = {k: np.asarray(state[k], self.dtype) for k in names}
        self.adam = AdamState(int(state["adam.step"]), {k: np.asarray(state[f"adam.m.{k}"], np.float64) for k in names},
                              {k: np.asarray(state[f"adam.v.{k}"], np.float64) for k in names})

    def decode(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.oracle.decode(self.params, z), np.float32)

    def synchronize(self) -> None:
        pass

    def device_memory(self) -> dict[str, float]:
        return {}

    def _eps(self, noise: Noise, n: int) -> np.ndarray:
        """The harness's noise, or (`--noise framework`) this engine's own draw from the seed."""
        if noise.eps is not None:
            return noise.eps
        return np.random.default_rng(noise.seed).standard_normal((n, self.m.latent_dim)).astype(np.float32)


backends.register("numpy-oracle", ENGINE, FRAMEWORK)  # the one registry line
