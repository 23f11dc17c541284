"""The experiment flags, defined once for `harness run` (and check, calibrate, parity) and `harness sweep`,
their types, and the RunConfig they describe.

Each flag that describes the experiment is one `Flag` of `EXPERIMENT_FLAGS`: `run` adds it as written,
`sweep` adds the same flag, except that a flag naming one of the sweep's axes (device, seed) takes a
list there, and nothing has a default (so a --spec file's value stands unless the flag is given).
`experiment_config` turns the values given, from flags or a spec file, into the RunConfig: the one
way from flags to a config, for a run and for a sweep's base.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import backends
import workloads
from harness.cli.flag_types import (  # noqa: F401 (re-exported: the subcommands import them from here)
    DEFAULT_BACKENDS,
    Parser,
    backend_list,
    device_list,
    engine_option,
    non_negative_float,
    non_negative_int,
    positive_int,
    seed_list,
)
from harness.config import NOISE_SOURCES, ModelConfig, RunConfig
from harness.errors import HarnessError
from harness.execution import devices


@dataclass(frozen=True)
class Flag:
    """One experiment flag: its argparse keywords for `run`, and what differs where `sweep` crosses it."""

    names: tuple[str, ...]
    options: dict[str, Any]
    axis: dict[str, Any] = field(default_factory=dict)  # sweep: the keywords (and "names") it replaces

    @property
    def dest(self) -> str:
        return self.options.get("dest") or self.names[0][2:].replace("-", "_")

    def run_options(self) -> dict[str, Any]:
        """The argparse keywords of the flag in `harness run` (a help given as a function is asked now)."""
        return {k: v() if k == "help" and callable(v) else v for k, v in self.options.items()}

    def sweep_options(self) -> tuple[tuple[str, ...], dict[str, Any]]:
        """(names, keywords) of the flag in `harness sweep`: the axis' form, and no default."""
        options = {**self.run_options(), **{k: v for k, v in self.axis.items() if k != "names"}}
        options["default"] = argparse.SUPPRESS
        return tuple(self.axis.get("names", self.names)), options


def _backends_help() -> str:
    # Asked when a parser is built, not on import: listing the backends loads the plugin backends.
    return f"comma-separated, from: {', '.join(backends.known())} (default {DEFAULT_BACKENDS})"


EXPERIMENT_FLAGS = (
    Flag(("--backends",), dict(type=backend_list, default=backend_list(DEFAULT_BACKENDS), help=_backends_help)),
    Flag(("--workload",), dict(choices=workloads.names(), default=workloads.DEFAULT,
                               help=f"what to train (default {workloads.DEFAULT}); each is a folder of workloads/")),
    Flag(("--device",), dict(default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)"),
         axis=dict(dest="devices", action="append", type=device_list,
                   help="cpu, cuda or auto; repeat or comma-separate for several (default cpu)")),
    Flag(("--epochs",), dict(type=positive_int, default=10, help="(default 10)")),
    Flag(("--batch-size",), dict(type=positive_int, default=None,
                                 help="training batch size (default 128, pytorch/examples'; recorded in the results)")),
    Flag(("--threads",), dict(type=positive_int, default=None,
                              help="CPU threads per backend, the same for all (default: every core; in a sweep, "
                                   "of the machine or Ray node running the job)")),
    Flag(("--compile-mode",), dict(default=backends.COMPILE_MODES[0], choices=backends.COMPILE_MODES,
                                   help="torch-compile's torch.compile mode (its engine option 'mode')")),
    Flag(("--engine-option",), dict(dest="engine_options", type=engine_option, action="append", default=[],
                                    metavar="BACKEND.OPTION=VALUE",
                                    help="an engine's own option, e.g. jax.epoch=loop (repeatable; options: "
                                         "backends/__init__.py)")),
    Flag(("--allow-tf32",), dict(action="store_true", help="let float32 matmuls use TF32 (GPU; recorded)")),
    Flag(("--precision",), dict(choices=("float32", "bf16"), default="float32",
                                help="bf16: bfloat16 matrix products and convolutions, float32 weights, gradients, "
                                     "Adam state and loss, in every backend (labelled; never compared with float32 runs)")),
    Flag(("--noise",), dict(choices=NOISE_SOURCES, default="harness",
                            help="harness (default): every backend gets the same noise arrays; counter: every "
                                 "backend generates the same counter-based noise on its device (harness/counter_noise.py); "
                                 "framework: each framework draws its own (opt-in; sources are never compared)")),
    Flag(("--timeout",), dict(type=non_negative_float, default=0.0, help="seconds per backend (0 = none)")),
    Flag(("--cold-compile",), dict(action="store_true",
                                   help="compile from empty jax/Inductor caches (a fresh folder per backend) instead "
                                        "of the shared persistent ones; results.json records each compile as cold or warm")),
    Flag(("--train-limit",), dict(type=positive_int, default=None, help=argparse.SUPPRESS)),  # tests: a few hundred
    Flag(("--test-limit",), dict(type=positive_int, default=None, help=argparse.SUPPRESS)),
    Flag(("--seed", "--seeds"), dict(dest="seed", type=seed_list, default=[1],
                                     help="the seed, or several like 1-5 or 1,3,7: one result per backend and seed "
                                          "(default 1)"),
         axis=dict(names=("--seeds", "--seed"), dest="seeds", type=seed_list, help="like 1-5 or 1,3,7 (default 1-5)")),
    Flag(("--ensemble",), dict(action="store_true",
                               help="train the seeds of each backend as ONE batched program, each seed seeing what "
                                    "its own run sees (torch, torch-compile, jax; torch-reference runs one seed per "
                                    "process)")),
    Flag(("--target-loss",), dict(type=float, default=None,
                                  help="primary-metric threshold for time to quality (default: the band top at the "
                                       "last epoch of the workload's longest calibrated profile, else 100)")),
    Flag(("--repeats",), dict(type=non_negative_int, default=0, metavar="K",
                              help="K extra timed epochs per backend after training, on a saved copy of the state, "
                                   "for tighter steady-state figures (losses and params unchanged)")),
)
FLAGS = {f.dest: f for f in EXPERIMENT_FLAGS}
# What `harness run` adds to the flags it shares with check, calibrate and parity (which set these themselves).
RUN_ONLY = ("seed", "ensemble", "target_loss", "repeats")


def add_run_flags(p: argparse.ArgumentParser, default_epochs: int | None = 10) -> None:
    """Flags shared by run, check, calibrate and parity: what to train and how (no --epochs when
    `default_epochs` is None), and where the data is."""
    for f in EXPERIMENT_FLAGS:
        if f.dest in RUN_ONLY or (f.dest == "epochs" and default_epochs is None):
            continue
        p.add_argument(*f.names, **{**f.run_options(), **({"default": default_epochs} if f.dest == "epochs" else {})})
    p.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files")


def add_run_only_flags(p: argparse.ArgumentParser) -> None:
    """The experiment flags `harness run` has beyond add_run_flags (its seeds, ensemble, target, repeats)."""
    for name in RUN_ONLY:
        p.add_argument(*FLAGS[name].names, **FLAGS[name].run_options())


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """Every experiment flag of `harness run`, in its sweep form (see Flag.sweep_options)."""
    for f in EXPERIMENT_FLAGS:
        names, options = f.sweep_options()
        p.add_argument(*names, **options)


def sweep_value(key: str, value: Any) -> Any:
    """A spec file's value of flag `key` (its sweep dest), parsed as the flag parses its text: lists may
    be TOML arrays or the flag's comma-separated text. Keys that are not experiment flags pass through."""
    flag = next((f for f in EXPERIMENT_FLAGS if f.axis.get("dest", f.dest) == key), None)
    if flag is None:
        return value
    _, options = flag.sweep_options()
    if options.get("action") == "store_true":
        if not isinstance(value, bool):
            raise HarnessError(f"spec {key}: {value!r} is not true or false")
        return value
    parse = options.get("type", str)
    items = value if options.get("action") == "append" and isinstance(value, list) else [value]
    try:
        parsed = [parse(",".join(map(str, v)) if isinstance(v, list) else str(v)) for v in items]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise HarnessError(f"spec {key}: {exc}") from None
    if "choices" in options and parsed[0] not in options["choices"]:
        raise HarnessError(f"spec {key}: {parsed[0]!r}: choose from {', '.join(options['choices'])}")
    return parsed if options.get("action") == "append" else parsed[0]


def experiment_config(given: dict[str, Any]) -> RunConfig:
    """The RunConfig the experiment flags in `given` (by dest; absent or None = the flag's default)
    describe, checked: backends, engine options, precision. Devices and threads are kept as given
    (0 = every core); `run_config` resolves them for a run here, a sweep's executor for each job."""
    def get(name: str) -> Any:
        value = given.get(name)
        return FLAGS[name].options.get("default") if value is None else value

    names = tuple(get("backends"))
    backends.check_names(list(names))
    model = ModelConfig(workload=get("workload"))
    if get("batch_size") is not None:
        model = dataclasses.replace(model, batch_size=get("batch_size"))
    precision = precision_of(given)
    target = get("target_loss")
    seeds = seeds_of(get("seed"))
    config = RunConfig(
        model=model, backends=names, device=get("device"), epochs=get("epochs"), seed=seeds[0],
        seeds=seeds if len(seeds) > 1 else (), ensemble=bool(get("ensemble")),
        threads=get("threads") or 0,
        engine_options=merged_options(compile_options(names, get("compile_mode")), get("engine_options")),
        precision=precision, train_limit=get("train_limit") or 0, test_limit=get("test_limit") or 0,
        timeout=get("timeout"), target_loss=target if target is not None else default_target(model.workload, precision),
        repeats=get("repeats"), noise=get("noise"), cold_compile=bool(get("cold_compile")),
    )
    backends.check_options(config.engine_options)
    absent = sorted(set(config.engine_options) - set(config.backends))
    if absent:
        raise HarnessError(f"--engine-option for {', '.join(absent)}, which this run does not train")
    return config


def seeds_of(value) -> tuple[int, ...]:
    """The seeds of --seed (one, or a list from --seeds 1-5); a seed given twice is one error line."""
    seeds = tuple(value) if isinstance(value, (list, tuple)) else (int(value),)
    twice = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
    if twice:
        raise HarnessError(f"--seeds: seed {', '.join(map(str, twice))} given twice")
    return seeds


def run_config(args) -> RunConfig:
    """A RunConfig from run/check/calibrate/parity flags, validated before any work starts; the device
    resolved and the threads counted. Commands without --epochs train 1 epoch."""
    config = experiment_config({"epochs": 1, **vars(args)})
    return dataclasses.replace(config, device=devices.resolve_device(config.device, backends.frameworks(config.backends)),
                               threads=config.threads or len(os.sched_getaffinity(0)))


def merged_options(base: dict[str, dict[str, str]], given: list[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    """Engine options from --compile-mode, then each --engine-option (a later one wins)."""
    out = {name: dict(options) for name, options in base.items()}
    for backend, option, value in given:
        out.setdefault(backend, {})[option] = value
    return out


def precision_of(given) -> str:
    """float32, tf32 (--allow-tf32) or bf16 (--precision bf16), from flags (a Namespace) or their values
    (a dict); asking for both is one error line."""
    get = given.get if isinstance(given, dict) else lambda name: getattr(given, name, None)
    precision = get("precision") or "float32"
    if get("allow_tf32"):
        if precision != "float32":
            raise HarnessError(f"--allow-tf32 and --precision {precision} exclude each other")
        return "tf32"
    return precision


def compile_options(names, mode: str) -> dict[str, dict[str, str]]:
    """--compile-mode as torch-compile's engine option (recorded only when torch-compile runs)."""
    return {"torch-compile": {"mode": mode}} if "torch-compile" in names else {}


def default_target(workload: str = workloads.DEFAULT, precision: str = "float32") -> float:
    """The workload's longest calibrated profile's last primary band top (of the run's precision when
    one was calibrated), else 100.0 (not calibrated)."""
    try:
        from harness.verification import check
        return check.default_target_loss(workload, precision)
    except (ImportError, HarnessError, KeyError, ValueError):
        return 100.0
