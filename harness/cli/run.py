"""`harness data` (locate and verify MNIST) and `harness run` (train backends side by side)."""
from __future__ import annotations

import shlex
import time
from pathlib import Path

import backends
from harness import data
from harness.cli.flags import add_run_flags, add_run_only_flags, run_config
from harness.execution import devices, runner
from harness.measurement import results, walltime


def add_subcommands(sub) -> None:
    p = sub.add_parser("data", help="locate, fetch and verify MNIST")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("run", help="train backends from identical weights, data order and noise")
    add_run_flags(p)
    add_run_only_flags(p)
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<time>)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR", help="continue an interrupted run")
    p.add_argument("--force", action="store_true", help="overwrite the run already in --out")
    p.add_argument("--no-probe", action="store_true", help="skip the probe (the roofline's measured ceilings, before and after the jobs)")
    p.add_argument("--no-report", action="store_true", help="do not write report.md at the end")
    p.set_defaults(func=cmd_run)


def cmd_data(args, argv) -> int:
    from harness.reporting.console import console
    mnist = data.load(args.data_dir)
    console.print(mnist.describe())
    console.print(f"train {mnist.train_x.shape}, test {mnist.test_x.shape}")
    return 0


def cmd_run(args, argv) -> int:
    from harness.reporting.console import RunProgress, console, print_failures, results_table

    if args.resume:
        run_dir = args.resume
        runner.prepare_run_dir(run_dir, resume=True, force=False)
        record = results.load(run_dir)
        done_before = {r.key for r in record.results if r.status == "ok"}  # not run again: not timed again
        config = record.config
        devices.resolve_device(config.device, backends.frameworks(config.backends))
        console.print(f"resuming {run_dir}: " + ", ".join(
            f"{r.backend} {r.status} after {len(r.epochs)} epoch(s)" for r in record.results))
    else:
        config = run_config(args)
        done_before = set()
        run_dir = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        runner.prepare_run_dir(run_dir, resume=False, force=args.force)
    if config.ensemble:
        from harness.execution.jobs import has_ensemble
        for name in (b for b in config.backends if not has_ensemble(b)):
            console.print(f"note: {name} has no seed ensemble; it trains one seed per process")
    mnist_dir, source = data.locate(args.data_dir)
    console.print(f"MNIST: {mnist_dir} ({source}); results: {run_dir / results.RESULTS_FILE}")
    command = "python -m harness " + " ".join(shlex.quote(a) for a in argv)
    execute_started = time.time()
    with RunProgress(config.epochs, len(config.run_seeds())) as progress:
        record = runner.execute(config, run_dir, mnist_dir, command=command, resume=bool(args.resume),
                                probe=not args.no_probe, on_event=progress.on_event)
    record.wall_seconds = walltime.run_breakdown(walltime.process_started_at(), execute_started, time.time(),
                                                 [r.wall_seconds.get("total", 0.0) for r in record.results
                                                  if r.key not in done_before])
    results.save(record, run_dir)
    console.print(results_table(record))
    print_failures(record)
    console.print(f"results: {run_dir / results.RESULTS_FILE}")
    if not args.no_report:
        from harness.reporting import report
        console.print(f"report: {report.write_report([run_dir], run_dir)}")
    return 0 if all(r.status == "ok" for r in record.results) else 1
