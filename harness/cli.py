"""Command line: `python -m harness {data,run,...}`. Parses flags, then hands off to the modules.

Every user error surfaces as one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from pathlib import Path

import backends
from harness import data, measure, results, runner
from harness.config import NOISE_SOURCES, ModelConfig, RunConfig, parse_seeds
from harness.errors import HarnessError

DEFAULT_BACKENDS = "torch,torch-compile,jax"
# Modules that define `add_subcommands(subparsers)`; they may import only framework-free code.
SUBCOMMAND_MODULES: list[str] = [
    "harness.probe",
    "harness.report",
    "harness.compare",
    "harness.parity",
    "harness.check",
    "harness.sweep",
    "harness.evaluate",
]


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one error line (no usage dump) and exit code 2."""

    def error(self, message: str):
        raise HarnessError(f"{self.prog}: {message}")


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
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    if default_epochs is not None:
        p.add_argument("--epochs", type=positive_int, default=default_epochs)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="training batch size (default 128, the reference's; recorded in the results)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads per backend, the same for all (default: every core)")
    p.add_argument("--compile-mode", default="default",
                   choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"))
    p.add_argument("--allow-tf32", action="store_true", help="let float32 matmuls use TF32 (GPU; recorded)")
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


def build_parser() -> Parser:
    parser = Parser(prog="harness", description="Train the MNIST VAE on several backends and compare them.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("data", help="locate, fetch and verify MNIST")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("run", help="train backends from identical weights, data order and noise")
    add_run_flags(p)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--target-loss", type=float, default=None,
                   help="test_loss threshold for time-to-quality (default: the CI target, else 100)")
    p.add_argument("--repeats", type=non_negative_int, default=0, metavar="K",
                   help="K extra timed epochs per backend after training, on a saved copy of the state, "
                        "for tighter steady-state figures (losses and params unchanged)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<time>)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR", help="continue an interrupted run")
    p.add_argument("--force", action="store_true", help="overwrite the run already in --out")
    p.add_argument("--no-probe", action="store_true", help="skip the matmul peak / floor probe")
    p.add_argument("--no-report", action="store_true", help="do not write report.md at the end")
    p.set_defaults(func=cmd_run)

    # Other subcommands live beside the code they drive; each module adds its own parsers.
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        return args.func(args, argv)
    except HarnessError as exc:
        from rich.markup import escape

        from harness.console import err_console
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 130 if isinstance(exc, runner.Interrupted) else 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_data(args, argv) -> int:
    from harness.console import console
    mnist = data.load(args.data_dir)
    console.print(mnist.describe())
    console.print(f"train {mnist.train_x.shape}, test {mnist.test_x.shape}")
    return 0


def run_config(args) -> RunConfig:
    """A RunConfig from run/check/calibrate flags, validated before any work starts."""
    backends.check_names(list(args.backends))
    model = ModelConfig() if args.batch_size is None else ModelConfig(batch_size=args.batch_size)
    device = measure.resolve_device(args.device, backends.frameworks(args.backends))
    return RunConfig(
        model=model, backends=args.backends, device=device,
        epochs=getattr(args, "epochs", 1), seed=getattr(args, "seed", 1),
        threads=args.threads or len(os.sched_getaffinity(0)), compile_mode=args.compile_mode,
        precision="tf32" if args.allow_tf32 else "float32",
        train_limit=args.train_limit or 0, test_limit=args.test_limit or 0, timeout=args.timeout,
        target_loss=args.target_loss if getattr(args, "target_loss", None) is not None else default_target(),
        repeats=getattr(args, "repeats", 0), noise=args.noise, cold_compile=args.cold_compile,
    )


def default_target() -> float:
    """The CI profile's full-run test_loss band top when targets exist, else 100.0."""
    try:
        from harness import check
        return check.default_target_loss()
    except (ImportError, HarnessError, KeyError):
        return 100.0


def cmd_run(args, argv) -> int:
    from harness.console import RunProgress, console, print_failures, results_table

    if args.resume:
        run_dir = args.resume
        runner.prepare_run_dir(run_dir, resume=True, force=False)
        record = results.load(run_dir)
        config = RunConfig.from_dict(record.config)
        measure.resolve_device(config.device, backends.frameworks(config.backends))
        console.print(f"resuming {run_dir}: " + ", ".join(
            f"{r.backend} {r.status} after {len(r.epochs)} epoch(s)" for r in record.results))
    else:
        config = run_config(args)
        run_dir = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        runner.prepare_run_dir(run_dir, resume=False, force=args.force)
    mnist_dir, source = data.locate(args.data_dir)
    console.print(f"MNIST: {mnist_dir} ({source}); results: {run_dir / results.RESULTS_FILE}")
    command = "python -m harness " + " ".join(shlex.quote(a) for a in argv)
    with RunProgress(config.epochs) as progress:
        record = runner.execute(config, run_dir, mnist_dir, command=command, resume=bool(args.resume),
                                probe=not args.no_probe, on_event=progress.on_event)
    console.print(results_table(record))
    print_failures(record)
    console.print(f"results: {run_dir / results.RESULTS_FILE}")
    if not args.no_report:
        from harness import report
        console.print(f"report: {report.write_report([run_dir], run_dir)}")
    return 0 if all(r.status == "ok" for r in record.results) else 1

