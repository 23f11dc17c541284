"""`harness parity`: teacher-forced lockstep steps of each backend against the float64 oracle."""
from __future__ import annotations

from pathlib import Path

from harness.cli.flags import add_run_flags, positive_int, run_config
from harness.errors import HarnessError
from harness.verification.parity import KINK_BUDGET, LOSS_RTOL, STEP_RTOL, allowed_kink_steps, kink_steps, run


def add_subcommands(sub) -> None:
    p = sub.add_parser("parity", help="lockstep every backend against the float64 NumPy oracle")
    add_run_flags(p, default_epochs=None)
    p.add_argument("--steps", type=positive_int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ensemble", type=positive_int, default=0, metavar="N",
                   help="judge each backend's seed ensemble of N members (seeds SEED .. SEED+N-1), member by member")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="also write DIR/parity.json (every figure, config, environment) and DIR/parity.md")
    p.set_defaults(func=cmd_parity)


def cmd_parity(args, argv) -> int:
    from rich.table import Table

    from rich.markup import escape

    from harness import data
    from harness.reporting.console import console

    config = run_config(args)
    if config.precision == "bf16":
        raise HarnessError("parity judges float32 steps against the float64 oracle; a bf16 step is judged by "
                           "its own calibrated loss bands (harness check), not by parity")
    if args.out is not None:
        from harness import atomic
        atomic.ensure_writable_dir(args.out, "--out folder")  # fail before minutes of work, not after
    mnist = data.load(args.data_dir)
    from harness.execution import caches
    with caches.activated(config.cold_compile):  # each backend's child inherits the caches, as in a run
        reports = run(list(config.backends), mnist.train_x, args.steps, config, ensemble=args.ensemble)
    for r in reports:
        if r.error:
            console.print(f"[red]error:[/red] parity of {r.backend}: {escape(r.error)}", soft_wrap=True)
    done = [r for r in reports if r.error is None]
    if args.out is not None:
        from harness.reporting import parity_report
        info = {k: v for r in done for k, v in r.frameworks.items()}
        doc = parity_report.to_dict(reports, config, args.steps, list(argv), info)
        parity_report.write(args.out, doc)
    if not done:
        return 1
    table = Table(title=f"lockstep parity over {args.steps} teacher-forced steps vs the float64 oracle: "
                        f"worst |diff| / max|ref| per tensor (tolerance {STEP_RTOL:g})")
    table.add_column("parameter")
    for r in done:
        table.add_column(r.backend, justify="right")
    for name in done[0].worst:
        table.add_row(name, *(_cell(r.worst[name], r.worst[name] <= STEP_RTOL) for r in done))
    table.add_row("entries beyond tol. (worst step)", *(str(max(r.outliers)) for r in done))
    allowed = allowed_kink_steps(args.steps)
    table.add_row(f"steps beyond {KINK_BUDGET} entries (allowed {allowed})",
                  *(_count(kink_steps(r.outliers), kink_steps(r.outliers) <= allowed) for r in done))
    table.add_row("per-step loss rel. error", *(_cell(r.max_loss_rel_err, r.max_loss_rel_err <= LOSS_RTOL) for r in done))
    table.add_row("free-running, after all steps (info)",
                  *(f"{max(r.free_running.values()):.1e}" if r.free_running else "-" for r in done))
    console.print(table)
    if args.out is not None:
        console.print(f"wrote {args.out / 'parity.json'} and {args.out / 'parity.md'}")
    bad = [r.backend for r in done if not r.ok]
    if bad:
        console.print(f"[red]disagree with the oracle: {', '.join(bad)}[/red]")
    if bad or len(done) < len(reports):
        return 1
    console.print(f"all {len(reports)} backends agree with the float64 oracle")
    return 0


def _cell(value: float, ok: bool) -> str:
    return f"{value:.1e}" if ok else f"[yellow]{value:.1e}[/yellow]"


def _count(n: int, ok: bool) -> str:
    return str(n) if ok else f"[red]{n} FAIL[/red]"
