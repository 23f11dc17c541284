"""Command line: `python -m harness {data,run,check,parity,sweep,report,...}`.

The top of the package: it parses flags and hands off to the modules that do the work; nothing
imports it. Each file here holds the subcommands of one area (run.py: data and run; check.py: check
and calibrate; ...) and defines `add_subcommands(subparsers)`. Every user error surfaces as one
line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import sys

from harness.cli import check, compare, evaluate, parity, probe, report, run, sweep
from harness.cli.flags import Parser
from harness.errors import HarnessError
from harness.execution import runner

SUBCOMMANDS = (run, probe, report, compare, parity, check, sweep, evaluate)


def build_parser() -> Parser:
    parser = Parser(prog="harness", description="Train the MNIST VAE on several backends and compare them.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in SUBCOMMANDS:
        module.add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        return args.func(args, argv)
    except HarnessError as exc:
        from rich.markup import escape

        from harness.reporting.console import err_console
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 130 if isinstance(exc, runner.Interrupted) else 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
