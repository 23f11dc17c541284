"""`harness sweep` takes every experiment flag of `harness run`, from the one definition in harness/cli/flags.py.

Each flag's value is followed into the jobs' RunConfigs through the sweep's planning (spec_from_args, then
SweepSpec.job_config for every job), and a bad value of each is one error line and exit code 2. Nothing
here trains.
"""
from __future__ import annotations

import pytest

from harness import cli
from harness.cli import flags
from harness.cli import sweep as cli_sweep
from harness.config import RunConfig
from harness.sweeps.state import leaders

# What `harness run` has that does not describe the experiment: where results go and what else to do.
RUN_NOT_EXPERIMENT = {"-h", "--help", "--out", "--resume", "--force", "--no-probe", "--no-report"}


def option_strings(command: str) -> set[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {s for a in sub._actions for s in a.option_strings}


def planned(*argv: str) -> list[RunConfig]:
    """The RunConfig of every job a sweep with these flags runs (threads as the spec gives them; an
    ensemble's seeds are one job)."""
    spec, _ = cli_sweep.spec_from_args(cli.build_parser().parse_args(["sweep", *argv]))
    return [spec.job_config(group[0], spec.base.threads) for group in leaders(spec.jobs()).values()]


def test_sweep_accepts_every_experiment_flag_of_run():
    missing = option_strings("run") - RUN_NOT_EXPERIMENT - option_strings("sweep")
    assert not missing, f"harness sweep lacks {sorted(missing)}"
    assert {n for f in flags.EXPERIMENT_FLAGS for n in f.names} | {"--data-dir"} == option_strings("run") - RUN_NOT_EXPERIMENT


# (flags, what every planned job's config shows); one row per experiment flag of `harness run`.
GOOD = [
    (["--backends", "torch,jax"], lambda cs: [c.backends for c in cs] == [("torch",), ("jax",)]),
    (["--workload", "conv-vae"], lambda cs: {c.model.workload for c in cs} == {"conv-vae"}),
    (["--device", "cuda"], lambda cs: {c.device for c in cs} == {"cuda"}),
    (["--device", "cpu,cuda"], lambda cs: [c.device for c in cs].count("cuda") == len(cs) / 2),
    (["--epochs", "3"], lambda cs: {c.epochs for c in cs} == {3}),
    (["--batch-size", "64"], lambda cs: {c.model.batch_size for c in cs} == {64}),
    (["--threads", "2"], lambda cs: {c.threads for c in cs} == {2}),
    (["--backends", "torch-compile,jax", "--compile-mode", "max-autotune"],
     lambda cs: [c.engine_options for c in cs] == [{"torch-compile": {"mode": "max-autotune"}}, {}]),
    (["--backends", "torch,jax", "--engine-option", "jax.epoch=loop"],
     lambda cs: [c.engine_options for c in cs] == [{}, {"jax": {"epoch": "loop"}}]),
    (["--allow-tf32"], lambda cs: {c.precision for c in cs} == {"tf32"}),
    (["--precision", "bf16"], lambda cs: {c.precision for c in cs} == {"bf16"}),
    (["--noise", "framework"], lambda cs: {c.noise for c in cs} == {"framework"}),
    (["--timeout", "30"], lambda cs: {c.timeout for c in cs} == {30.0}),
    (["--cold-compile"], lambda cs: {c.cold_compile for c in cs} == {True}),
    (["--train-limit", "256"], lambda cs: {c.train_limit for c in cs} == {256}),
    (["--test-limit", "128"], lambda cs: {c.test_limit for c in cs} == {128}),
    (["--seed", "7"], lambda cs: [c.seed for c in cs] == [7] * len(cs)),
    (["--seeds", "2-3"], lambda cs: sorted({c.seed for c in cs}) == [2, 3]),
    # an ensemble: each backend's seeds are one job's run (torch-reference, which has none, one per seed)
    (["--backends", "jax,torch-reference", "--seeds", "2-3", "--ensemble"],
     lambda cs: [(c.backends, c.run_seeds(), c.ensemble) for c in cs]
     == [(("jax",), (2, 3), True), (("torch-reference",), (2,), True), (("torch-reference",), (3,), True)]),
    (["--target-loss", "99.5"], lambda cs: {c.target_loss for c in cs} == {99.5}),
    (["--repeats", "2"], lambda cs: {c.repeats for c in cs} == {2}),
]


@pytest.fixture
def gpu_named(monkeypatch):
    """`--device cuda` resolves on this machine too: the test follows the flag, not a GPU."""
    from harness.execution import devices
    fake = lambda device, frameworks=(): "cpu" if device == "auto" else device  # noqa: E731
    monkeypatch.setattr(devices, "resolve_device", fake)
    monkeypatch.setattr(cli_sweep, "resolve_device", fake)  # sweep imported the name itself


@pytest.mark.parametrize("argv, holds", GOOD, ids=[" ".join(g[0]) for g in GOOD])
def test_flag_value_reaches_every_job(argv, holds, gpu_named):
    configs = planned("--seeds", "1", *argv) if "--seed" not in argv and "--seeds" not in argv else planned(*argv)
    assert configs and holds(configs), [c for c in configs]
    defaults = planned("--seeds", "1")
    assert not holds(defaults), "the flag's value must differ from the default for the test to mean anything"


BAD = [
    (["--backends", "torch,nope"], "unknown backend 'nope'"),
    (["--workload", "nope"], "invalid choice: 'nope'"),
    (["--device", "cuda:1"], "spreads 'cuda' jobs"),
    (["--epochs", "0"], "'0' is not a positive integer"),
    (["--batch-size", "x"], "'x' is not an integer"),
    (["--threads", "-2"], "'-2' is not a positive integer"),
    (["--compile-mode", "fast"], "invalid choice: 'fast'"),
    (["--engine-option", "jax.epoch"], "is not BACKEND.OPTION=VALUE"),
    (["--backends", "jax", "--engine-option", "jax.epoch=nope"], "jax epoch 'nope': choose from"),
    (["--backends", "jax", "--engine-option", "torch.denormals=flush"], "which this run does not train"),
    (["--allow-tf32", "--precision", "bf16"], "exclude each other"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
    (["--noise", "own"], "invalid choice: 'own'"),
    (["--timeout", "-1"], "'-1' is negative"),
    (["--cold-compile=yes"], "ignored explicit argument"),
    (["--train-limit", "0"], "'0' is not a positive integer"),
    (["--test-limit", "-3"], "'-3' is not a positive integer"),
    (["--seed", "x"], "is not a seed list"),
    (["--target-loss", "low"], "invalid float value: 'low'"),
    (["--repeats", "-1"], "'-1' is negative"),
    (["--ensemble=yes"], "ignored explicit argument"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_flag_value_is_one_line(argv, message, capsys, tmp_path):
    assert cli.main(["sweep", *argv, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "s").exists()


def test_a_sweep_job_is_the_run_of_the_same_flags():
    """One definition: `run` and a one-job `sweep` given the same flags make the same RunConfig."""
    argv = ["--backends", "jax", "--seed", "3", "--epochs", "2", "--batch-size", "64", "--threads", "1",
            "--engine-option", "jax.epoch=loop", "--precision", "bf16", "--noise", "framework",
            "--timeout", "9", "--train-limit", "256", "--test-limit", "128", "--target-loss", "150",
            "--repeats", "1", "--cold-compile", "--workload", "conv-vae"]
    run = flags.run_config(cli.build_parser().parse_args(["run", *argv]))
    (job,) = planned(*argv)
    assert job == run


def test_spec_file_takes_the_same_fields(tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_text('backends = ["torch", "jax"]\nseeds = "1"\nnoise = "framework"\nbatch_size = 64\n'
                    'repeats = 2\nprecision = "bf16"\ncold_compile = true\nengine_option = ["jax.epoch=loop"]\n')
    from_file = planned("--spec", str(path))
    assert from_file == planned("--backends", "torch,jax", "--seeds", "1", "--noise", "framework", "--batch-size", "64",
                                "--repeats", "2", "--precision", "bf16", "--cold-compile", "--engine-option", "jax.epoch=loop")
    assert {c.noise for c in planned("--spec", str(path), "--noise", "harness")} == {"harness"}  # a flag wins
    path.write_text('noise = "own"\n')
    assert cli.main(["sweep", "--spec", str(path), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert "spec noise: 'own': choose from harness, framework" in err and len(err.splitlines()) == 1
