"""`harness sweep`: a spec from flags or a TOML file, expanded into jobs and handed to an executor."""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import time
import tomllib
from pathlib import Path
from typing import Any

import backends
from harness.cli import flags
from harness.config import ModelConfig, parse_seeds
from harness.errors import HarnessError
from harness.execution.devices import resolve_device
from harness.sweeps.state import DEFAULT_SEEDS, EXECUTORS, FINISHED, SWEEP_FILE, SweepSpec, SweepState, load, new_state
from harness.sweeps.summary import ci_triple, fmt_ci, metric_names
from harness.sweeps.sweep import prepare_dir, run

# Sweep-only flags: the latent-size axis and where the jobs run (every other flag is `harness run`'s).
WHERE = ("executor", "address", "max_retries")
SWEEP_ONLY = ("latent_dims", *WHERE)
# A spec file may name an axis as its run flag is named (device, seed) or as the sweep's (devices, seeds).
ALIASES = {"device": "devices", "seed": "seeds", "engine_option": "engine_options"}


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in str(text).split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers like 2,5,10,20") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: latent sizes must be positive integers")
    return values


def spec_keys() -> tuple[str, ...]:
    """The fields a sweep takes, from flags or a spec file: every experiment flag's (sweep) dest, and
    the sweep's own."""
    return (*(f.axis.get("dest", f.dest) for f in flags.EXPERIMENT_FLAGS), *SWEEP_ONLY)


def _coerce(key: str, value: Any) -> Any:
    """A spec file's value checked by its flag's parser (harness/cli/flags.py for the experiment flags)."""
    own = {"latent_dims": _int_list, "max_retries": flags.non_negative_int}.get(key)
    if own is None:
        return flags.sweep_value(key, value)
    try:
        return own(",".join(map(str, value)) if isinstance(value, list) else str(value))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise HarnessError(f"spec {key}: {exc}") from None


def read_spec_file(path: Path) -> dict[str, Any]:
    """The fields of a TOML spec file (the flags' names with underscores); unknown keys are an error."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise HarnessError(f"--spec {path}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"--spec {path}: not valid TOML ({exc})") from None
    allowed = {*spec_keys(), *ALIASES, "out"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise HarnessError(f"--spec {path}: unknown field(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(allowed))}")
    raw = {ALIASES.get(k, k): v for k, v in raw.items()}
    return {k: v if k == "out" else _coerce(k, v) for k, v in raw.items()}


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields given as flags (absent = not given: the sweep's flags have no defaults)."""
    return {k: v for k, v in vars(args).items() if k in spec_keys() and v is not None}


def _flag_name(key: str) -> str:
    """The sweep's flag for spec field `key` (devices -> --device), for error lines."""
    flag = next((f for f in flags.EXPERIMENT_FLAGS if f.axis.get("dest", f.dest) == key), None)
    return flag.sweep_options()[0][0] if flag else "--" + key.replace("_", "-")


def build_spec(fields: dict[str, Any]) -> SweepSpec:
    """A validated SweepSpec from merged file and flag fields: the base RunConfig from the experiment
    flags (as `harness run` makes it), the axes, and devices resolved for the executor."""
    fields = dict(fields)
    fields.pop("out", None)
    # --device (and a spec file's devices) may be given several times, each a comma-separated list
    axes = {"devices": tuple(d for group in fields.pop("devices", [["cpu"]]) for d in group),
            "seeds": tuple(fields.pop("seeds", parse_seeds(DEFAULT_SEEDS))),
            "latent_dims": tuple(fields.pop("latent_dims", (ModelConfig().latent_dim,)))}
    where = {k: fields.pop(k) for k in WHERE if k in fields}
    base = flags.experiment_config(fields)
    for name, values in (("backends", base.backends), *axes.items()):
        if not values:
            raise HarnessError(f"the sweep names no {name.replace('_', ' ')}")
        if len(set(values)) != len(values):
            raise HarnessError(f"{name.replace('_dims', ' dims')} repeat a value: {', '.join(map(str, values))}")
    spec = placed(SweepSpec(base=base, backends=base.backends, **axes, **where))
    # The base is a job too: the axes' first values (job_config replaces them for every job).
    return dataclasses.replace(spec, base=dataclasses.replace(
        base, device=spec.devices[0], seed=spec.seeds[0],
        model=dataclasses.replace(base.model, latent_dim=spec.latent_dims[0])))


def placed(spec: SweepSpec) -> SweepSpec:
    """`spec` with its executor checked and its devices resolved for it (also on --resume, which may
    change where the jobs run)."""
    if spec.executor not in EXECUTORS:
        raise HarnessError(f"unknown executor {spec.executor!r}; use one of: {', '.join(EXECUTORS)}")
    return dataclasses.replace(spec, devices=tuple(resolve_devices(spec.devices, spec.executor,
                                                                   backends.frameworks(spec.backends))))


def resolve_devices(devices: tuple[str, ...], executor: str, frameworks: list[str] = ()) -> list[str]:
    """cpu or cuda per job. 'cuda' jobs are spread over the GPUs by the executor, so no job names one."""
    out = []
    for device in devices:
        if device.startswith("cuda:"):
            raise HarnessError(f"device {device!r}: a sweep spreads 'cuda' jobs over every visible GPU itself; "
                               "name --device cuda (and limit the GPUs with CUDA_VISIBLE_DEVICES)")
        if executor == "ray":
            if device not in ("cpu", "cuda"):
                raise HarnessError(f"device {device!r}: with --executor ray name cpu or cuda (the Ray nodes, "
                                   "not this machine, hold the devices)")
            out.append(device)
        else:
            out.append(resolve_device(device, frameworks))
    return list(dict.fromkeys(out))  # auto may resolve to a device also named explicitly


def add_subcommands(sub) -> None:
    """`harness sweep`: called by harness.cli for every module in SUBCOMMAND_MODULES."""
    p = sub.add_parser("sweep", help="run backend x device x seed x latent-size jobs, locally or on Ray",
                       description="Every job is one `harness run` in its own sub-folder of --out; "
                                   "DIR/sweep.json holds the jobs and their statistics.")
    p.add_argument("--spec", type=Path, default=None, metavar="FILE",
                   help="TOML file with the same fields as the flags (flags given win)")
    flags.add_sweep_flags(p)  # every experiment flag of `harness run`; --device and --seed(s) take lists
    p.add_argument("--latent-dims", dest="latent_dims", type=_int_list, default=None,
                   help=f"latent sizes, like 2,5,10,20 (default {ModelConfig().latent_dim})")
    p.add_argument("--executor", choices=EXECUTORS, default=None, help="local (default) or ray")
    p.add_argument("--address", default=None, metavar="HOST:PORT", help="Ray cluster (--executor ray)")
    p.add_argument("--max-retries", dest="max_retries", type=flags.non_negative_int, default=None,
                   help="Ray retries of a job whose node or worker died (default 2)")
    p.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files")
    p.add_argument("--out", type=Path, default=None, help="sweep folder (default runs/sweep-<time>)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue DIR: skip finished jobs, rerun failed or interrupted ones")
    p.add_argument("--force", action="store_true", help="overwrite the sweep already in --out")
    p.add_argument("--no-report", action="store_true", help="do not write DIR/report.md at the end")
    p.set_defaults(func=cmd_sweep)


def _start(args: argparse.Namespace, command: str) -> tuple[SweepState, Path, bool]:
    """(state, folder, is_new) of a new sweep or of the one --resume names; nothing written yet."""
    given = flag_values(args)
    if args.resume:
        # Where to run may change on resume (say, finish a Ray sweep locally); what to run may not.
        changed = [_flag_name(k) for k in sorted(set(given) - set(WHERE))]
        extra = changed + (["--spec"] if args.spec else []) + (["--out"] if args.out else [])
        if extra:
            raise HarnessError(f"--resume takes the sweep from {args.resume / SWEEP_FILE}; drop {', '.join(extra)}")
        state = load(args.resume)
        state.spec = placed(dataclasses.replace(state.spec, **{k: v for k, v in given.items() if k in WHERE}))
        return state, args.resume, False
    spec, out = spec_from_args(args)
    return new_state(spec, command), out or Path("runs") / time.strftime("sweep-%Y%m%d-%H%M%S"), True


def spec_from_args(args: argparse.Namespace) -> tuple[SweepSpec, Path | None]:
    """The spec of a new sweep (the --spec file, then the flags given) and its --out, if named."""
    from_file = read_spec_file(args.spec) if args.spec else {}
    out = args.out or (Path(from_file["out"]) if "out" in from_file else None)
    return build_spec({**from_file, **flag_values(args)}), out


def cmd_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    from rich.markup import escape

    from harness.reporting.console import console
    from harness.sweeps import executors

    command = "python -m harness " + " ".join(shlex.quote(a) for a in argv)
    state, sweep_dir, is_new = _start(args, command)
    executor = executors.create(state.spec, args.data_dir, command)  # fails fast, e.g. ray not installed
    prepare_dir(sweep_dir, state.jobs, resume=not is_new, force=args.force)
    todo = sum(j.status not in FINISHED for j in state.jobs)
    console.print(f"sweep: {len(state.jobs)} jobs ({todo} to run) on the {state.spec.executor} executor; "
                  f"{sweep_dir / SWEEP_FILE}")
    run(state, sweep_dir, executor, say=lambda line: console.print(line, markup=False))
    console.print(summary_table(state))
    if not args.no_report:
        from harness.reporting import sweep_report
        console.print(f"report: {sweep_report.write_sweep_report(sweep_dir, sweep_dir)}")
    failed = [j for j in state.jobs if j.status != "ok"]
    for job in failed:
        console.print(f"[red]{job.id}: {job.status}[/red]: {escape(job.error or '')}")
    return 0 if not failed else 1


def summary_table(state: SweepState):
    """The summary as a rich table: mean (95 % interval) per backend x device x latent size."""
    from rich.table import Table

    names = metric_names(state.spec)
    table = Table(title="sweep summary: mean (95% CI) over seeds of the final test metrics and samples/s")
    for col in ("backend", "device", "latent", "n", *names, "samples/s", "fastest is x faster"):
        table.add_column(col, justify="left" if col in ("backend", "device") else "right")
    for s in state.summary:
        speed = "-"
        if s["backend"] != s["fastest"] and s["speedup_of_fastest"] is not None:
            speed = f"{s['fastest']} " + fmt_ci(*ci_triple(s, "speedup_of_fastest", "speedup"), ".2f", "x")
        table.add_row(s["backend"], s["device"], str(s["latent_dim"]), str(s["n"]),
                      *(fmt_ci(*ci_triple(s, f"{name}_mean", name)) for name in names),
                      fmt_ci(*ci_triple(s, "samples_per_second_mean", "samples_per_second"), ",.0f"), speed)
    return table

