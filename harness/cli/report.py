"""`harness report RUN_DIR...`: report.md and figures from finished runs."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.reporting.report import write_report


def add_subcommands(sub) -> None:
    p = sub.add_parser("report", help="write report.md and figures from saved run folders")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("-o", "--out", type=Path, default=None, metavar="OUT_DIR",
                   help="where report.md and figures/ go (default: the first RUN_DIR)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.reporting.console import console
    if len(args.run_dirs) == 1 and (args.run_dirs[0] / "sweep.json").exists():
        from harness.reporting.sweep_report import write_sweep_report
        path = write_sweep_report(args.run_dirs[0], args.out or args.run_dirs[0])
    else:
        path = write_report(args.run_dirs, args.out or args.run_dirs[0])
    console.print(f"report: {path}")
    return 0
