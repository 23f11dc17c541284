"""`harness compare BASE NEW`: the same backends before and after a change."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness import atomic
from harness.errors import HarnessError
from harness.reporting.compare_report import print_table, to_markdown
from harness.verification.compare import compare


def add_subcommands(sub) -> None:
    p = sub.add_parser("compare", help="per-backend change in loss and speed between two run folders")
    p.add_argument("base", type=Path, metavar="BASE_RUN")
    p.add_argument("new", type=Path, metavar="NEW_RUN")
    p.add_argument("--markdown", type=Path, default=None, metavar="FILE", help="also write the table as markdown")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace, argv: list[str]) -> int:
    rows = compare(args.base, args.new)
    print_table(args.base, args.new, rows)
    if args.markdown:
        try:
            atomic.write_text(args.markdown, to_markdown(args.base, args.new, rows))
        except OSError as exc:
            raise HarnessError(f"cannot write {args.markdown}: {exc.strerror or exc}") from None
        from harness.reporting.console import console
        console.print(f"markdown: {args.markdown}")
    return 0
