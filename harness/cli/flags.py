"""Flags and flag types shared by the subcommands, and the RunConfig they describe."""
from __future__ import annotations

import argparse
import dataclasses
import os

import backends
import workloads
from harness.config import NOISE_SOURCES, ModelConfig, RunConfig, parse_seeds
from harness.errors import HarnessError
from harness.execution import devices


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one error line (no usage dump) and exit code 2."""

    def error(self, message: str):
        raise HarnessError(f"{self.prog}: {message}")


DEFAULT_BACKENDS = "torch,torch-compile,jax"


def _number(text: str, cast, minimum, problem: str):
    """Parse a flag value as int or float and enforce a lower bound, for argparse's `type=`."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if cast is int else 'a number'}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is {problem}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, "not a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, 0, "negative")


def non_negative_float(text: str) -> float:
    return _number(text, float, 0.0, "negative")


def backend_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("no backend named")
    return names


def seed_list(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed list like 1-5 or 1,3,7") from None


def add_run_flags(p: argparse.ArgumentParser, default_epochs: int | None = 10) -> None:
    """Flags shared by run, check and calibrate: what to train and how."""
    p.add_argument("--backends", type=backend_list, default=backend_list(DEFAULT_BACKENDS),
                   help=f"comma-separated, from: {', '.join(backends.known())} (default {DEFAULT_BACKENDS})")
    p.add_argument("--workload", choices=workloads.names(), default=workloads.DEFAULT,
                   help=f"what to train (default {workloads.DEFAULT}); each is a folder of workloads/")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    if default_epochs is not None:
        p.add_argument("--epochs", type=positive_int, default=default_epochs)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="training batch size (default 128, pytorch/examples'; recorded in the results)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads per backend, the same for all (default: every core)")
    p.add_argument("--compile-mode", default=backends.COMPILE_MODES[0], choices=backends.COMPILE_MODES,
                   help="torch-compile's torch.compile mode (its engine option 'mode')")
    p.add_argument("--engine-option", dest="engine_options", type=engine_option, action="append", default=[],
                   metavar="BACKEND.OPTION=VALUE",
                   help="an engine's own option, e.g. jax.epoch=loop (repeatable; options: backends/__init__.py)")
    p.add_argument("--allow-tf32", action="store_true", help="let float32 matmuls use TF32 (GPU; recorded)")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                   help="bf16: bfloat16 matrix products and convolutions, float32 weights, gradients, Adam "
                        "state and loss, in every backend (labelled; never compared with float32 runs)")
    p.add_argument("--noise", choices=NOISE_SOURCES, default="harness",
                   help="harness (default): every backend gets the same noise arrays; framework: each "
                        "framework draws its own (opt-in, never compared with harness-noise runs)")
    p.add_argument("--timeout", type=non_negative_float, default=0.0, help="seconds per backend (0 = none)")
    p.add_argument("--cold-compile", action="store_true",
                   help="compile from empty jax/Inductor caches (a fresh folder per backend) instead of the "
                        "shared persistent ones; results.json records each compile as cold or warm")
    p.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files")
    p.add_argument("--train-limit", type=positive_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--test-limit", type=positive_int, default=None, help=argparse.SUPPRESS)


def run_config(args) -> RunConfig:
    """A RunConfig from run/check/calibrate flags, validated before any work starts."""
    backends.check_names(list(args.backends))
    model = ModelConfig(workload=getattr(args, "workload", workloads.DEFAULT))
    if args.batch_size is not None:
        model = dataclasses.replace(model, batch_size=args.batch_size)
    device = devices.resolve_device(args.device, backends.frameworks(args.backends))
    config = RunConfig(
        model=model, backends=args.backends, device=device,
        epochs=getattr(args, "epochs", 1), seed=getattr(args, "seed", 1),
        threads=args.threads or len(os.sched_getaffinity(0)),
        engine_options=merged_options(compile_options(args.backends, args.compile_mode),
                                      getattr(args, "engine_options", [])),
        precision=precision_of(args),
        train_limit=args.train_limit or 0, test_limit=args.test_limit or 0, timeout=args.timeout,
        target_loss=args.target_loss if getattr(args, "target_loss", None) is not None else default_target(model.workload, precision_of(args)),
        repeats=getattr(args, "repeats", 0), noise=args.noise, cold_compile=args.cold_compile,
    )
    backends.check_options(config.engine_options)
    absent = sorted(set(config.engine_options) - set(config.backends))
    if absent:
        raise HarnessError(f"--engine-option for {', '.join(absent)}, which this run does not train")
    return config


def engine_option(text: str) -> tuple[str, str, str]:
    """argparse type of --engine-option: 'jax.epoch=loop' -> ('jax', 'epoch', 'loop')."""
    target, sep, value = text.partition("=")
    backend, dot, option = target.rpartition(".")
    if not (sep and dot and backend and option and value):
        raise argparse.ArgumentTypeError(f"{text!r} is not BACKEND.OPTION=VALUE (like jax.epoch=loop)")
    return backend, option, value


def merged_options(base: dict[str, dict[str, str]], given: list[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    """Engine options from --compile-mode, then each --engine-option (a later one wins)."""
    out = {name: dict(options) for name, options in base.items()}
    for backend, option, value in given:
        out.setdefault(backend, {})[option] = value
    return out


def precision_of(args) -> str:
    """float32, tf32 (--allow-tf32) or bf16 (--precision bf16); asking for both is one error line."""
    precision = getattr(args, "precision", "float32")
    if getattr(args, "allow_tf32", False):
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
