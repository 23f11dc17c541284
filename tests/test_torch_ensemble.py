"""Torch seed ensembles (backends/torch/ensemble.py, ensemble_compile.py): member i is its own single-seed run.

Each member is checked against the single-seed engine fed the same initial params, permutation and
noise; the two differ only in float32 reduction order (batched vs single matrix products), so the
comparisons use a tolerance, and each test prints what it measured (run with -s to see it). Also: a
NaN member leaves the others alone, state round-trips per member, the conv workload batches, the
counter noise matches its reference bit for bit, and torch-compile compiles only in warmup(). Each in
both member arrangements (engine option `members`: vmap, and sequential, the CPU's default). The numbers
measured in the docstrings are vmap's; sequential runs each member through the single engine's own
module code and, when written (torch 2.13, CPU), differed by at most 1.1e-7 on state and 0 on losses.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch._dynamo.utils

import backends
from backends.base import pass_noise
from backends.torch import common as tc
from harness import counter_noise as cn
from harness.config import ModelConfig, RunConfig
from harness.draws import epoch_permutation, init_params
from harness.errors import HarnessError

N_TRAIN, N_TEST = 300, 200  # 2 full batches and a partial one of 44
SEEDS = (1, 2, 3)
STEPS = 3
LOSS_RTOL = 1e-5   # per-sample losses and metrics, relative
STATE_TOL = 1e-3   # params and Adam moments: max |difference| over max |value| of each tensor
MEMBERS = ("vmap", "sequential")
each_arrangement = pytest.mark.parametrize("members", MEMBERS)


def run_config(members: str, engine: str = "torch", n: int = N_TRAIN, n_test: int = N_TEST, **kw) -> RunConfig:
    """A CPU run of n training and n_test test samples whose ensemble arranges its members as `members`."""
    options = {**kw.pop("engine_options", {}).get(engine, {}), "members": members}
    return RunConfig(train_limit=n, test_limit=n_test, engine_options={engine: options}, **kw)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compile afresh: dynamo's recompile limit counts the compiled engines of earlier tests."""
    torch._dynamo.reset()


def ensemble(engine: str, seeds, train_x, test_x, config: RunConfig):
    """The engine's ensemble class, found the way the registry names it (BackendSpec.ensemble)."""
    module, cls = backends.REGISTRY[engine].ensemble.split(":")
    e = getattr(importlib.import_module(module), cls)()
    e.setup([init_params(s, config.model) for s in seeds], train_x, test_x, config)
    return e


def single(engine: str, seed: int, train_x, test_x, config: RunConfig):
    b = backends.create(engine)
    b.setup(init_params(seed, config.model), train_x, test_x, config)
    return b


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def state_diff(a: dict, b: dict) -> float:
    """Max over tensors of max |a - b| / max |b|; the step counts must be equal."""
    assert set(a) == set(b) and int(a["adam.step"]) == int(b["adam.step"])
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-30)) for k in a if k != "adam.step")


def metrics_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(rel(a[k], b[k]) for k in a)


def epoch_inputs(seeds, epoch: int, n: int, latent: int, source: str = "harness"):
    return (np.stack([epoch_permutation(s, epoch, n) for s in seeds]),
            [pass_noise(source, s, epoch, n, latent) for s in seeds])


def compare_with_single_runs(engine: str, seeds, x, tx, config: RunConfig, steps: int = STEPS) -> dict[str, float]:
    """`steps` lockstep steps (full batches), then (from the initial state again) epoch 1 and eval: ensemble vs each member's run."""
    m = config.model
    e = ensemble(engine, seeds, x, tx, config)
    initial = e.get_state()
    perms, noises = epoch_inputs(seeds, 1, len(x), m.latent_dim)
    tests = [pass_noise("harness", s, 0, len(tx), m.latent_dim) for s in seeds]
    bs = m.batch_size
    batches = [(np.stack([x[p[j * bs:(j + 1) * bs]] for p in perms]),
                np.stack([nz.eps[j * bs:(j + 1) * bs] for nz in noises])) for j in range(steps)]
    ens_steps = np.array([e.lockstep_step(xb, eb) for xb, eb in batches])
    ens_stepped = e.get_state()
    e.set_state(initial)
    ens_loss, ens_eval, ens_end = e.train_epoch(perms, noises), e.evaluate(tests), e.get_state()
    worst = dict.fromkeys(("lockstep loss", "lockstep state", "epoch loss", "eval", "epoch state"), 0.0)
    for i, seed in enumerate(seeds):
        b = single(engine, seed, x, tx, config)
        start = b.get_state()
        for j, (xb, eb) in enumerate(batches):
            worst["lockstep loss"] = max(worst["lockstep loss"], rel(ens_steps[j, i], b.lockstep_step(xb[i], eb[i])))
        worst["lockstep state"] = max(worst["lockstep state"], state_diff(ens_stepped[i], b.get_state()))
        b.set_state(start)
        worst["epoch loss"] = max(worst["epoch loss"], rel(ens_loss[i], b.train_epoch(perms[i], noises[i])))
        worst["eval"] = max(worst["eval"], metrics_diff(ens_eval[i], b.evaluate(tests[i])))
        worst["epoch state"] = max(worst["epoch state"], state_diff(ens_end[i], b.get_state()))
    print(f"\n{engine} ensemble of {len(seeds)} vs single-seed runs, max differences:",
          {k: f"{v:.2g}" for k, v in worst.items()})
    return worst


def assert_close(worst: dict[str, float]) -> None:
    for what, d in worst.items():
        assert d <= (STATE_TOL if "state" in what else LOSS_RTOL), (what, d)


@each_arrangement
@pytest.mark.parametrize("engine", ["torch", "torch-compile"])
def test_members_equal_their_single_seed_runs(mnist, engine, members):
    """Member i of 3 = the single-seed engine on seed i: lockstep losses and state after STEPS steps,
    epoch-1 train loss, eval metrics and state after the epoch. When written (torch 2.13, CPU) this
    test measured at most 1.1e-7 relative on losses and metrics and 2.7e-5 on state for torch, 5.6e-7
    and 7.6e-5 for torch-compile (it prints them with -s)."""
    worst = compare_with_single_runs(engine, SEEDS, mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST],
                                     run_config(members, engine))
    assert_close(worst)


@each_arrangement
def test_one_member_equals_the_single_seed_run(mnist, members):
    """An ensemble of one is the single-seed engine (when written, this test measured at most 1.5e-7
    relative on losses and metrics and 1.5e-5 on state)."""
    assert_close(compare_with_single_runs("torch", (5,), mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST],
                                          run_config(members)))


@each_arrangement
def test_a_nan_member_leaves_the_others_alone(mnist, members):
    """Member 1's params set to NaN: its loss and metrics are NaN; members 0 and 2 train and evaluate as
    their single-seed runs (nothing couples the members: no shared norm, check or skipped step). When
    written, this test measured at most 8.4e-8 relative on the healthy members' losses and metrics."""
    x, tx, config = mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST], run_config(members)
    e = ensemble("torch", SEEDS, x, tx, config)
    states = e.get_state()
    states[1] = {k: (np.full_like(v, np.nan) if not k.startswith("adam.") else v) for k, v in states[1].items()}
    e.set_state(states)
    perms, noises = epoch_inputs(SEEDS, 1, N_TRAIN, 20)
    tests = [pass_noise("harness", s, 0, N_TEST, 20) for s in SEEDS]
    losses, metrics, after = e.train_epoch(perms, noises), e.evaluate(tests), e.get_state()
    assert np.isnan(losses[1]) and all(np.isnan(v) for v in metrics[1].values())
    worst = 0.0
    for i in (0, 2):
        b = single("torch", SEEDS[i], x, tx, config)
        worst = max(worst, rel(losses[i], b.train_epoch(perms[i], noises[i])),
                    metrics_diff(metrics[i], b.evaluate(tests[i])))
        assert state_diff(after[i], b.get_state()) <= STATE_TOL
    print(f"\nhealthy members vs single-seed runs beside a NaN member: max relative difference {worst:.3g}")
    assert worst <= LOSS_RTOL


@each_arrangement
def test_state_round_trips_per_member(mnist, members):
    """get_state -> set_state (into another ensemble, members in another order) -> get_state is exact,
    and training goes on identically; members with different step counts are refused."""
    x, tx, config = mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST], run_config(members)
    a = ensemble("torch", SEEDS, x, tx, config)
    perms, noises = epoch_inputs(SEEDS, 1, N_TRAIN, 20)
    a.train_epoch(perms, noises)
    saved = a.get_state()
    b = ensemble("torch", (7, 8, 9), x, tx, config)
    b.set_state(saved[::-1])
    assert_states_equal(b.get_state(), saved[::-1])
    b.set_state(saved)
    perms2, noises2 = epoch_inputs(SEEDS, 2, N_TRAIN, 20)
    np.testing.assert_array_equal(a.train_epoch(perms2, noises2), b.train_epoch(perms2, noises2))
    assert_states_equal(b.get_state(), a.get_state())
    mixed = [saved[0], saved[1], {**saved[2], "adam.step": np.array(0, dtype=np.int64)}]
    with pytest.raises(HarnessError, match="adam.step"):
        b.set_state(mixed)


@each_arrangement
def test_conv_vae_members_equal_their_single_seed_runs(mnist, members):
    """conv-vae (vmap makes the convolutions grouped): a 2-member ensemble on one full batch and a partial
    one against the single-seed runs, to the same tolerances (when written, this test measured at most
    3.3e-7 relative on losses and metrics and 6.1e-5 on state)."""
    n, n_test = 160, 64
    config = run_config(members, n=n, n_test=n_test, model=ModelConfig(workload="conv-vae"))
    worst = compare_with_single_runs("torch", (1, 2), mnist.train_x[:n], mnist.test_x[:n_test], config, steps=1)
    assert_close(worst)


def test_counter_noise_on_the_device_equals_the_reference():
    """tc.noise_tensor with a counter Noise (--noise counter) and the ensemble's stacked noise both equal
    harness.counter_noise.normals bit for bit on the CPU."""
    n, latent = 1000, 20
    want = [cn.normals(s, 3, cn.STREAM_REPARAM, 0, n, latent) for s in SEEDS]
    for s, w in zip(SEEDS, want):
        noise = pass_noise("counter", s, 3, n, latent)
        assert noise.eps is None and noise.counter == (s, 3)
        np.testing.assert_array_equal(tc.noise_tensor(noise, n, latent, torch.device("cpu")).numpy(), w)
    from backends.torch.ensemble import TorchEnsemble
    e = TorchEnsemble()
    e.size, e.m, e.device = len(SEEDS), ModelConfig(), torch.device("cpu")
    stacked = e.noise([pass_noise("counter", s, 3, n, latent) for s in SEEDS], n).numpy()
    np.testing.assert_array_equal(stacked, np.stack(want))


@pytest.mark.parametrize("engine", ["torch", "torch-compile"])
def test_the_member_arrangement_is_an_engine_option(mnist, engine):
    """`members` is declared beside the engine; auto is sequential on the CPU; a bad value is one clear
    error; the single-seed engine, which shares the options, ignores it."""
    assert backends.REGISTRY[engine].options["members"] == ("auto", *MEMBERS)
    x, tx = mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST]
    info = ensemble(engine, SEEDS, x, tx, run_config("auto", engine)).describe()
    assert info["members"] == "sequential-members" and info["arrangement"].startswith("sequential-")
    assert "member by member" in info["eval"] and "one after another" in ensemble(
        "torch", SEEDS, x, tx, run_config("sequential")).describe()["step"]
    assert ensemble(engine, SEEDS, x, tx, run_config("vmap", engine)).describe()["members"] == "vmap-members"
    with pytest.raises(HarnessError, match=f"{engine} members 'both'"):
        ensemble(engine, SEEDS, x, tx, run_config("both", engine))
    single(engine, 1, x, tx, run_config("sequential", engine))


def test_sequential_members_share_the_compiled_graphs(mnist):
    """torch-compile, members=sequential: the member's module is an argument of the compiled loss, so
    an ensemble of more members than dynamo's recompile limit compiles in warmup() exactly what an
    ensemble of one does (no per-member recompiles), and its epochs compile nothing."""
    x, tx, config = mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST], run_config("sequential", "torch-compile")
    compiled = []
    for size in (1, torch._dynamo.config.recompile_limit + 1):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        e = ensemble("torch-compile", range(1, size + 1), x, tx, config)
        e.warmup()
        compiled.append(dict(torch._dynamo.utils.counters["frames"]))
    e.train_epoch(*epoch_inputs(range(1, size + 1), 1, N_TRAIN, 20))
    assert compiled[0] == compiled[1] == dict(torch._dynamo.utils.counters["frames"]) and compiled[0]["ok"] > 0


CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
# (device, mode, the arrangement it runs (backends/torch/compile.py), ensemble size)
COMPILE_CASES = [pytest.param("cpu", "default", "compiled-step", 3, id="cpu"),
                 pytest.param("cpu", "default", "compiled-step", 1, id="cpu-one-member"),  # size-1 strides
                 pytest.param("cuda", "default", "cuda-graph-step", 3, id="cuda-graph-step", marks=CUDA),
                 pytest.param("cuda", "reduce-overhead", "cudagraph-trees", 3, id="cudagraph-trees", marks=CUDA)]


def assert_states_equal(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for k in w:
            np.testing.assert_array_equal(g[k], w[k], err_msg=k)


@each_arrangement
@pytest.mark.parametrize("device,mode,arrangement,size", COMPILE_CASES)
def test_torch_compile_ensemble_does_not_recompile_after_warmup(mnist, device, mode, arrangement, size, members):
    """warmup() compiles (and captures) the full batch, the partial batch and eval on a copy of the state;
    epochs and eval then compile nothing. On CUDA also with the counter noise generated on the GPU."""
    config = run_config(members, "torch-compile", device=device, engine_options={"torch-compile": {"mode": mode}})
    seeds = SEEDS[:size]
    if arrangement == "cudagraph-trees" and members == "sequential":
        with pytest.raises(HarnessError, match="no cudagraph-trees arrangement"):
            ensemble("torch-compile", seeds, mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST], config)
        return
    e = ensemble("torch-compile", seeds, mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST], config)
    assert e.describe()["arrangement"] == f"{members}-{arrangement}" and e.describe()["ensemble"] == str(size)
    before = e.get_state()
    e.warmup()
    assert_states_equal(e.get_state(), before)
    frames = dict(torch._dynamo.utils.counters["frames"])
    source = "counter" if device == "cuda" else "harness"
    for epoch in (1, 2):
        losses = e.train_epoch(*epoch_inputs(seeds, epoch, N_TRAIN, 20, source))
        metrics = e.evaluate([pass_noise(source, s, 0, N_TEST, 20) for s in seeds])
        assert np.isfinite(losses).all() and all(np.isfinite(list(m.values())).all() for m in metrics)
    assert dict(torch._dynamo.utils.counters["frames"]) == frames
    if device == "cuda":
        assert e.device_memory()["capacity_bytes"] >= e.device_memory()["peak_bytes"] > 0


@pytest.mark.parametrize("device,mode,arrangement,size", [c for c in COMPILE_CASES if c.values[0] == "cuda"])
def test_cuda_members_equal_their_single_seed_runs(mnist, device, mode, arrangement, size):
    """On the GPU, in each CUDA arrangement: member i = single-seed torch-compile on seed i (as above)."""
    config = RunConfig(device=device, train_limit=N_TRAIN, test_limit=N_TEST,
                       engine_options={"torch-compile": {"mode": mode}})
    assert_close(compare_with_single_runs("torch-compile", SEEDS, mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST],
                                          config))


@each_arrangement
def test_cuda_graph_arrangement_logic_on_cpu(mnist, monkeypatch, members):
    """The CUDA-graph arrangement's bookkeeping (graphs keyed by the batch axis, static inputs gathered
    into, lazy capture with the state restored, the partial batch) computes what the compiled step
    does, with tests/test_torch_state.py's emulated graphs. The graphs themselves need a GPU (above)."""
    from backends.torch import compile as tcmp
    from tests.test_torch_state import EmulatedGraphs
    x, tx, config = mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST], run_config(members, "torch-compile")
    plain = ensemble("torch-compile", SEEDS, x, tx, config)
    monkeypatch.setattr(tcmp, "arrangement", lambda device, mode: "cuda-graph-step")
    monkeypatch.setattr(tcmp, "StepGraphs", EmulatedGraphs)
    graphed = ensemble("torch-compile", SEEDS, x, tx, config)
    assert graphed.describe()["optimizer"] == "Adam(fused=True, capturable=True) over the stacked params"
    initial = graphed.get_state()
    graphed.warmup()
    assert sorted(graphed.graphs.graphs) == [44, 128]
    assert_states_equal(graphed.get_state(), initial)
    for epoch in (1, 2):
        inputs = epoch_inputs(SEEDS, epoch, N_TRAIN, 20)
        np.testing.assert_allclose(graphed.train_epoch(*inputs), plain.train_epoch(*inputs), rtol=1e-6)
    for got, want in zip(graphed.get_state(), plain.get_state()):
        assert state_diff(got, want) <= STATE_TOL
    lockstep = ensemble("torch-compile", SEEDS, x, tx, config)  # no warm-up: lockstep captures on first use
    lockstep.set_state(plain.get_state())
    xb = np.stack([x[p[:44]] for p in epoch_inputs(SEEDS, 3, N_TRAIN, 20)[0]])
    eb = np.random.default_rng(0).standard_normal((len(SEEDS), 44, 20), dtype=np.float32)
    np.testing.assert_allclose(lockstep.lockstep_step(xb, eb), plain.lockstep_step(xb, eb), rtol=1e-6)
    assert list(lockstep.graphs.graphs) == [44]
