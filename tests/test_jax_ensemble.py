"""The jax seed ensemble (backends/jax/ensemble.py): each member is its own single-seed run of the jax
engine (same initial params, permutation and noise give the same numbers), for every noise source and
the conv workload; a NaN member leaves the others alone; state round trip; nothing compiles after warmup.
Each in both member arrangements (engine option `members`: vmap, and sequential, the CPU's default). The
numbers measured in the docstrings are vmap's; sequential runs the single engine's own functions per member,
and every gap these tests print for it was 0 (bit for bit) on the CPU when written (jax 0.10.2).

Real MNIST, 300 training samples (2 * 128 + 44: the kept partial batch is exercised) and 100 test samples.
Parameter gaps are oracle.compare's metric (rms of the difference over rms of the single run, per tensor;
float32 Adam moves a few near-zero-gradient entries by O(lr), which a max-based metric would report).
Measured gaps are printed (run with -s).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import backends.jax  # noqa: E402
from backends.base import EnsembleBackend, Noise, pass_noise  # noqa: E402
from backends.jax.engine import JaxBackend  # noqa: E402
from backends.jax.ensemble import JaxEnsemble  # noqa: E402
from harness import counter_noise as cn  # noqa: E402
from harness.config import ModelConfig, RunConfig  # noqa: E402
from harness.draws import epoch_permutation, init_params  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.verification import oracle  # noqa: E402

N_TRAIN, N_TEST = 300, 100
SEEDS = (1, 2, 3)
MLP, CONV = ModelConfig(), ModelConfig(workload="conv-vae")
MEMBERS = ("vmap", "sequential")
each_arrangement = pytest.mark.parametrize("members", MEMBERS)


@pytest.fixture(scope="module")
def data(mnist) -> tuple[np.ndarray, np.ndarray]:
    return mnist.train_x[:N_TRAIN], mnist.test_x[:N_TEST]


def config(source: str = "harness", m: ModelConfig = MLP, epoch: str = "auto", members: str = "auto") -> RunConfig:
    return RunConfig(train_limit=N_TRAIN, test_limit=N_TEST, noise=source, model=m,
                     engine_options={"jax": {"epoch": epoch, "members": members}})


def single(data, seed: int, source: str = "harness", m: ModelConfig = MLP, epoch: str = "auto") -> JaxBackend:
    b = JaxBackend()
    b.setup(init_params(seed, m), data[0], data[1], config(source, m, epoch))
    return b


def ensemble(data, seeds=SEEDS, source: str = "harness", m: ModelConfig = MLP, epoch: str = "auto",
             members: str = "auto") -> JaxEnsemble:
    e = JaxEnsemble()
    e.setup([init_params(s, m) for s in seeds], data[0], data[1], config(source, m, epoch, members))
    return e


def perms(seeds, epoch: int) -> np.ndarray:
    return np.stack([epoch_permutation(s, epoch, N_TRAIN) for s in seeds])


def noise(source: str, seed: int, epoch: int, n: int = N_TRAIN) -> Noise:
    return pass_noise(source, seed, epoch, n, MLP.latent_dim)


def host_counter(seed: int, epoch: int, n: int = N_TRAIN) -> Noise:
    """The counter noise of (seed, epoch) as a host array: the NumPy reference, handed over like the harness's."""
    return Noise(0, cn.normals(seed, epoch, cn.STREAM_REPARAM, 0, n, MLP.latent_dim))


def param_gap(reference: dict, candidate: dict) -> float:
    """The largest rms_rel_err over every float tensor (params and Adam moments); step counts must agree."""
    assert int(reference["adam.step"]) == int(candidate["adam.step"])
    keys = [k for k in reference if k != "adam.step"]
    return max(r["rms_rel_err"] for r in oracle.compare({k: reference[k] for k in keys}, candidate, rtol=1, atol=0))


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def metric_gap(reference: dict, candidate: dict) -> float:
    assert list(reference) == list(candidate)
    return max(rel(candidate[k], reference[k]) for k in reference)


def run_pass(backend, seeds, source: str, epoch: int = 1):
    """One training epoch and the evaluation: (train losses, metrics); one seed = the single engine."""
    if isinstance(backend, JaxEnsemble):
        losses = backend.train_epoch(perms(seeds, epoch), [noise(source, s, epoch) for s in seeds])
        return list(losses), backend.evaluate([noise(source, s, 0, N_TEST) for s in seeds])
    (seed,) = seeds
    return ([backend.train_epoch(epoch_permutation(seed, epoch, N_TRAIN), noise(source, seed, epoch))],
            [backend.evaluate(noise(source, seed, 0, N_TEST))])


@contextlib.contextmanager
def count_compiles():
    """Names of the functions XLA compiles inside the block (jax's own monitoring event)."""
    names: list[str] = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kw.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_the_registry_names_this_class_and_it_is_an_ensemble_backend(data):
    module, _, cls = backends.jax.ENGINE.ensemble.partition(":")
    assert (module, cls) == (JaxEnsemble.__module__, JaxEnsemble.__name__)
    assert backends.jax.ENGINE.options["members"] == ("auto", *MEMBERS)
    e = ensemble(data)
    assert isinstance(e, EnsembleBackend) and e.name == "jax"
    info = e.describe()  # auto: sequential on the CPU
    assert info["arrangement"] == "sequential-jit-scan-epoch" and info["members"] == "sequential-members"
    assert info["ensemble_size"] == "3" and "lax.fori_loop over the members" in info["step"]
    info = ensemble(data, members="vmap").describe()
    assert info["arrangement"] == "vmap-jit-scan-epoch" and info["members"] == "vmap-members" and "vmap" in info["step"]
    assert e.device_memory() == {}
    with pytest.raises(HarnessError, match="jax members 'both'"):
        ensemble(data, members="both")
    single(data, 1).setup(init_params(1, MLP), data[0], data[1], config(members="sequential"))  # ignored there


@each_arrangement
def test_each_member_equals_its_single_seed_run(data, members):
    """Member i of 3 = the single engine from init_params(i), epoch_permutation(i, .) and pass_noise(i, .):
    3 lockstep steps (losses, then params and Adam state), then from a fresh start epoch 1's train loss,
    the evaluation and the state. Measured by this test (CPU): lockstep losses within 7.9e-8 (relative),
    parameter gap 1.6e-7; epoch loss equal, metrics within 7.7e-8, parameter gap 1.2e-7. Bounds: 1e-6
    for losses and metrics, 10x the measured gap for the params."""
    x, eps = data[0], [noise("harness", s, 1).eps for s in SEEDS]
    e, singles = ensemble(data, members=members), [single(data, s) for s in SEEDS]
    order = perms(SEEDS, 1)
    gaps, step_gaps = [], []
    for j in range(3):
        rows = slice(j * 100, (j + 1) * 100)
        losses = e.lockstep_step(np.stack([x[p[rows]] for p in order]), np.stack([n[rows] for n in eps]))
        expected = [b.lockstep_step(x[p[rows]], n[rows]) for b, p, n in zip(singles, order, eps)]
        assert losses.shape == (3,) and losses.dtype == np.float64
        step_gaps += [rel(a, b) for a, b in zip(losses, expected)]
    lockstep = max(param_gap(b.get_state(), s) for b, s in zip(singles, e.get_state()))
    e, singles = ensemble(data, members=members), [single(data, s) for s in SEEDS]
    losses, metrics = run_pass(e, SEEDS, "harness")
    for i, (b, seed) in enumerate(zip(singles, SEEDS)):
        (loss,), (metric,) = run_pass(b, (seed,), "harness")
        gaps.append((rel(losses[i], loss), metric_gap(metric, metrics[i]), param_gap(b.get_state(), e.get_state()[i])))
    print(f"\nlockstep loss gap {max(step_gaps):.2e}, param gap {lockstep:.2e}; "
          f"epoch (loss, metrics, params) gaps {np.max(gaps, axis=0)}")
    assert max(step_gaps) <= 1e-6 and lockstep <= 1.6e-6
    assert max(g[0] for g in gaps) <= 1e-6 and max(g[1] for g in gaps) <= 1e-6
    assert max(g[2] for g in gaps) <= 1.2e-6
    assert len({round(v, 3) for v in losses}) == 3  # the members differ (the comparison is not vacuous)


@each_arrangement
def test_an_ensemble_of_one_is_the_single_engine(data, members):
    """Size 1 is still vmapped (a batch axis of 1), or sliced out of a stack of 1, so not the same program.
    Measured by this test (CPU): loss and metrics equal, parameter gap 1.5e-7 (bounds: 1e-6, 1e-6, 1.5e-6)."""
    (loss,), (metric,) = run_pass(e := ensemble(data, (5,), members=members), (5,), "harness")
    (expected,), (expected_metric,) = run_pass(b := single(data, 5), (5,), "harness")
    gaps = rel(loss, expected), metric_gap(expected_metric, metric), param_gap(b.get_state(), e.get_state()[0])
    print(f"\nsize-1 gaps (loss, metrics, params) {gaps}")
    assert gaps[0] <= 1e-6 and gaps[1] <= 1e-6 and gaps[2] <= 1.5e-6


@each_arrangement
@pytest.mark.parametrize("source", ["harness", "counter", "framework"])
def test_no_compile_after_warmup_and_members_match_for_every_noise_source(data, source, members):
    """For each noise source, ensemble and single engine compile nothing after warmup (two epochs, the
    evaluation, the state), and members equal their single-seed runs. Measured by this test (CPU): losses
    and metrics equal, parameter gaps after two epochs 1.31e-7 (harness), 1.30e-7 (counter), 1.43e-7
    (framework); bounds 1e-6 for losses and metrics, 2e-6 for params."""
    seeds = SEEDS[:2]
    e, singles = ensemble(data, seeds, source, members=members), [single(data, s, source) for s in seeds]
    before = e.get_state()
    for b in (e, *singles):
        b.warmup()
    assert all(param_gap(a, b) == 0 for a, b in zip(before, e.get_state()))  # warmup changes nothing
    with count_compiles() as compiled:
        runs = [[run_pass(b, s, source, epoch) for epoch in (1, 2)] for b, s in ((e, seeds), *zip(singles, [(s,) for s in seeds]))]
        states = [b.get_state() for b in (e, *singles)]
        e.synchronize()
    assert compiled == []
    (loss, metrics) = runs[0][1]
    gaps = [(rel(loss[i], runs[1 + i][1][0][0]), metric_gap(runs[1 + i][1][1][0], metrics[i]),
             param_gap(states[1 + i], states[0][i])) for i in range(len(seeds))]
    print(f"\n{source}: (loss, metrics, params) gaps {np.max(gaps, axis=0)}")
    assert all(math.isfinite(v) for v in loss)
    assert max(g[0] for g in gaps) <= 1e-6 and max(g[1] for g in gaps) <= 1e-6 and max(g[2] for g in gaps) <= 2e-6


@each_arrangement
def test_counter_noise_on_the_device_equals_the_host_reference(data, members):
    """`--noise counter`: the ensemble generates each member's noise inside its epoch program, the single
    engine in its own program; both train like the single engine fed harness.counter_noise.normals' host
    arrays (the jax twin is within 1 ulp of them). Measured by this test (CPU): the device noise within
    1 ulp of the reference; single engine, counter vs host arrays: loss, metrics and params equal; ensemble
    members vs host arrays: loss and metrics equal, parameter gap 1.3e-7. Bounds: 1e-6, and 1.5e-6 for
    the members' params."""
    seeds = SEEDS[:2]
    device_noise = single(data, 1, "counter")
    device_noise.warmup()
    generated = np.asarray(device_noise._noise(noise("counter", 7, 3), N_TRAIN))
    reference = host_counter(7, 3).eps
    assert np.max(np.abs(generated.view(np.int32) - reference.view(np.int32))) <= 1 and generated.dtype == np.float32
    e = ensemble(data, seeds, "counter", members=members)
    losses = e.train_epoch(perms(seeds, 1), [noise("counter", s, 1) for s in seeds])
    metrics = e.evaluate([noise("counter", s, 0, N_TEST) for s in seeds])
    gaps = []
    for i, seed in enumerate(seeds):
        host, dev = single(data, seed), single(data, seed, "counter")
        runs = [(b.train_epoch(epoch_permutation(seed, 1, N_TRAIN), z), b.evaluate(zt))
                for b, z, zt in ((host, host_counter(seed, 1), host_counter(seed, 0, N_TEST)),
                                 (dev, noise("counter", seed, 1), noise("counter", seed, 0, N_TEST)))]
        for loss, metric, state in ((losses[i], metrics[i], e.get_state()[i]), (*runs[1], dev.get_state())):
            gaps.append((rel(loss, runs[0][0]), metric_gap(runs[0][1], metric), param_gap(host.get_state(), state)))
    gaps = np.array(gaps)
    print(f"\ncounter vs host arrays, (loss, metrics, params) gaps: ensemble members {gaps[0::2].max(axis=0)}, "
          f"single engine {gaps[1::2].max(axis=0)}")
    assert gaps[:, :2].max() <= 1e-6 and gaps[0::2, 2].max() <= 1.5e-6 and gaps[1::2, 2].max() <= 1e-6


@each_arrangement
def test_a_nan_member_leaves_the_others_alone(data, members):
    """Member 1's params set to NaN: its loss and metrics are NaN; members 0 and 2 are bit for bit what
    they are in the same ensemble without the NaN, and equal their single-seed runs (measured by this
    test, CPU: loss equal, metrics within 7.7e-8, parameter gap 1.2e-7; bounds 1e-6, 1e-6, 1.5e-6)."""
    e = ensemble(data, members=members)
    start = e.get_state()
    poisoned = [dict(s) for s in start]
    poisoned[1] = {k: (np.full_like(v, np.nan) if k in MLP.param_order() else v) for k, v in start[1].items()}
    clean_losses, clean_metrics = run_pass(e, SEEDS, "harness")
    clean_state = e.get_state()
    e.set_state(poisoned)
    losses, metrics = run_pass(e, SEEDS, "harness")
    state = e.get_state()
    assert math.isnan(losses[1]) and all(math.isnan(v) for v in metrics[1].values())
    assert all(np.isnan(state[1][k]).all() for k in MLP.param_order())
    for i in (0, 2):
        assert losses[i] == clean_losses[i] and metrics[i] == clean_metrics[i]
        assert param_gap(clean_state[i], state[i]) == 0
        b = single(data, SEEDS[i])
        (loss,), (metric,) = run_pass(b, (SEEDS[i],), "harness")
        gap = rel(losses[i], loss), metric_gap(metric, metrics[i]), param_gap(b.get_state(), state[i])
        print(f"\nNaN beside member {i}: (loss, metrics, params) gaps to its single run {gap}")
        assert gap[0] <= 1e-6 and gap[1] <= 1e-6 and gap[2] <= 1.5e-6


@each_arrangement
def test_state_round_trip_is_exact_and_training_continues(data, members):
    """get_state -> set_state (into another ensemble, members with different Adam step counts) is exact,
    and both continue identically."""
    a = ensemble(data, members=members)
    a.train_epoch(perms(SEEDS, 1), [noise("harness", s, 1) for s in SEEDS])
    states = a.get_state()
    assert [int(s["adam.step"]) for s in states] == [3, 3, 3] and all(s["adam.step"].dtype == np.int64 for s in states)
    states[2]["adam.step"] = np.array(7, np.int64)  # members may have stepped differently
    b = ensemble(data, (7, 8, 9), members=members)
    for x in (a, b):
        x.set_state(states)
        got = x.get_state()
        assert all(set(s) == set(g) and all(np.array_equal(s[k], g[k]) and s[k].dtype == g[k].dtype for k in s)
                   for s, g in zip(states, got))
    losses = [x.train_epoch(perms(SEEDS, 2), [noise("harness", s, 2) for s in SEEDS]) for x in (a, b)]
    assert np.array_equal(losses[0], losses[1])
    assert [int(s["adam.step"]) for s in b.get_state()] == [6, 6, 10]
    with pytest.raises(HarnessError, match="2 member states"):
        a.set_state(states[:2])


@each_arrangement
def test_loop_arrangement_equals_the_scan(data, members):
    """Engine option epoch=loop: a Python loop of jitted batch steps (vmapped, or one member's), the same
    numbers as the scan (measured by this test, CPU: loss and params equal; bounds 1e-6)."""
    scan = ensemble(data, SEEDS[:2], "counter", members=members)
    loop = ensemble(data, SEEDS[:2], "counter", epoch="loop", members=members)
    assert loop.describe()["arrangement"] == f"{members}-jit-step-loop" and "scan" not in loop.describe()["step"]
    loop.warmup()
    with count_compiles() as compiled:  # the loop's batch steps (one per batch size) were compiled in warmup
        looped = run_pass(loop, SEEDS[:2], "counter")  # counter noise: generated batch by batch
    assert compiled == []
    results = [run_pass(scan, SEEDS[:2], "counter"), looped]
    gaps = (max(rel(a, b) for a, b in zip(results[0][0], results[1][0])),
            max(param_gap(a, b) for a, b in zip(scan.get_state(), loop.get_state())))
    print(f"\nloop vs scan (loss, params) gaps {gaps}")
    assert gaps[0] <= 1e-6 and gaps[1] <= 1e-6


def test_bad_input_is_one_clear_error(data):
    e = ensemble(data)
    with pytest.raises(HarnessError, match="same source"):
        e.train_epoch(perms(SEEDS, 1), [noise("harness", 1, 1), noise("counter", 2, 1), noise("harness", 3, 1)])
    with pytest.raises(HarnessError, match="noise for 2 members"):
        e.train_epoch(perms(SEEDS, 1), [noise("harness", 1, 1)] * 2)
    with pytest.raises(HarnessError, match="permutations of shape"):
        e.train_epoch(perms(SEEDS[:2], 1), [noise("harness", s, 1) for s in SEEDS])
    with pytest.raises(HarnessError, match="at least one member"):
        JaxEnsemble().setup([], data[0], data[1], config())


@each_arrangement
def test_conv_members_equal_their_single_seed_runs(data, members):
    """conv-vae: per-member kernels under vmap become grouped convolutions (jax#26568). A 2-member
    ensemble's members equal their single-seed runs over one epoch of 3 batches. Measured by this test
    (CPU): losses and metrics equal, parameter gap 2.2e-7 (bounds 1e-6, 1e-6, 2.5e-6)."""
    seeds = SEEDS[:2]
    e = ensemble(data, seeds, m=CONV, members=members)
    losses, metrics = run_pass(e, seeds, "harness")
    gaps = []
    for i, seed in enumerate(seeds):
        b = single(data, seed, m=CONV)
        (loss,), (metric,) = run_pass(b, (seed,), "harness")
        gaps.append((rel(losses[i], loss), metric_gap(metric, metrics[i]), param_gap(b.get_state(), e.get_state()[i])))
    print(f"\nconv (loss, metrics, params) gaps {np.max(gaps, axis=0)}")
    assert max(g[0] for g in gaps) <= 1e-6 and max(g[1] for g in gaps) <= 1e-6 and max(g[2] for g in gaps) <= 2.5e-6
