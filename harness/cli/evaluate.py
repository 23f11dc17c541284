"""`harness evaluate RUN_DIR --iwae K`: importance-weighted NLL of a finished run's saved params."""
from __future__ import annotations

import argparse
from pathlib import Path

import backends
from harness import data
from harness.cli import flags
from harness.evaluation import iwae
from harness.evaluation.evaluate import DEFAULT_K, Options, evaluate_run, run_dirs_of


def k_value(text: str) -> int:
    """argparse type of --iwae: a positive integer, else one error line naming K."""
    try:
        return iwae.check_k(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"K must be a positive integer (like 5000), got {text!r}") from None


def add_subcommands(sub) -> None:
    p = sub.add_parser("evaluate", help="importance-weighted log-likelihood (IWAE) of saved runs")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder or a sweep folder")
    p.add_argument("--iwae", dest="k", type=k_value, default=DEFAULT_K, metavar="K",
                   help=f"importance samples per test image (default {DEFAULT_K}; smaller is quicker)")
    p.add_argument("--backends", type=flags.backend_list, default=(), help="default: every backend of the run")
    p.add_argument("--test-limit", type=flags.positive_int, default=0, help="the first N test images only")
    p.add_argument("--batch", type=flags.positive_int, default=0,
                   help="test images per batch (default: about 1024 rows of K draws on CPU, 65536 on GPU)")
    p.add_argument("--threads", type=flags.positive_int, default=0, help="CPU threads (default: every core)")
    p.add_argument("--device", default="", help="evaluate on this device instead of the run's")
    p.add_argument("--noise", choices=("harness", "counter"), default="harness",
                   help="counter: the draws are generated on the evaluating device from the counter-based "
                        "definition (harness/counter_noise.py), as a large K on a GPU needs (default: harness, "
                        "drawn on the host)")
    p.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    opts = Options(k=args.k, backends=tuple(args.backends), test_limit=args.test_limit, batch=args.batch,
                   threads=args.threads, device=args.device, data_dir=args.data_dir, noise=args.noise)
    if opts.backends:
        backends.check_names(list(opts.backends))
    dirs = run_dirs_of(args.run_dir, opts.backends)
    mnist_dir, _ = data.locate(args.data_dir)
    failures = [f for d in dirs for f in evaluate_run(d, opts, mnist_dir)]
    print(f"rebuild the report to show it: python -m harness report {args.run_dir}")
    return 1 if failures else 0
