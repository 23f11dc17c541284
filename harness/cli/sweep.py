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
import workloads
from harness.cli import flags
from harness.config import PRECISIONS, ModelConfig
from harness.errors import HarnessError
from harness.execution import devices
from harness.sweeps.state import DEFAULT_SEEDS, EXECUTORS, FINISHED, SWEEP_FILE, SweepSpec, SweepState, load, new_state
from harness.sweeps.summary import ci_triple, fmt_ci, metric_names
from harness.sweeps.sweep import prepare_dir, run

SPEC_FLAGS = ("backends", "devices", "seeds", "latent_dims", "workload", "epochs", "threads", "compile_mode",
              "timeout", "train_limit", "test_limit", "target_loss", "cold_compile", "executor", "address",
              "max_retries")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in str(text).split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers like 2,5,10,20") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: latent sizes must be positive integers")
    return values


def _device_list(text: str) -> list[str]:
    return [d.strip() for d in text.split(",") if d.strip()]


def _workload(text: str) -> str:
    if text not in workloads.names():
        raise ValueError(f"unknown workload {text!r}; known: {', '.join(workloads.names())}")
    return text


def _coerce(key: str, value: Any) -> Any:
    """A TOML value checked by its flag's parser: lists may be TOML arrays or the flag's text."""
    as_text = ",".join(map(str, value)) if isinstance(value, list) else value
    parse = {"backends": flags.backend_list, "seeds": flags.seed_list, "latent_dims": _int_list,
             "devices": _device_list, "epochs": flags.positive_int, "threads": flags.positive_int,
             "train_limit": flags.positive_int, "test_limit": flags.positive_int, "timeout": flags.non_negative_float,
             "max_retries": flags.non_negative_int, "target_loss": float, "workload": _workload}.get(key)
    if parse is None:
        return value
    try:
        return parse(str(as_text))
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
    allowed = {f.name for f in dataclasses.fields(SweepSpec)} | {"out", "device", "allow_tf32"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise HarnessError(f"--spec {path}: unknown field(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(allowed))}")
    if "device" in raw:
        raw["devices"] = raw.pop("device")
    if raw.pop("allow_tf32", False):
        if raw.get("precision", "float32") != "float32":
            raise HarnessError(f"--spec {path}: allow_tf32 and precision {raw['precision']!r} exclude each other")
        raw["precision"] = "tf32"
    return {k: _coerce(k, v) for k, v in raw.items()}


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields given as flags (None = not given)."""
    given = {k: getattr(args, k, None) for k in SPEC_FLAGS}
    if args.devices:
        given["devices"] = [d for group in args.devices for d in group]
    if args.allow_tf32:
        given["precision"] = "tf32"
    return {k: v for k, v in given.items() if v is not None}


def build_spec(fields: dict[str, Any]) -> SweepSpec:
    """A validated SweepSpec from merged file and flag fields; devices resolved for the executor."""
    fields = dict(fields)
    fields.pop("out", None)
    fields.setdefault("backends", flags.backend_list(flags.DEFAULT_BACKENDS))
    fields.setdefault("target_loss", flags.default_target(fields.get("workload", workloads.DEFAULT),
                                                           fields.get("precision", "float32")))
    spec = SweepSpec.from_dict(fields)
    backends.check_names(list(spec.backends))
    if spec.executor not in EXECUTORS:
        raise HarnessError(f"unknown executor {spec.executor!r}; use one of: {', '.join(EXECUTORS)}")
    for name, values in (("backends", spec.backends), ("devices", spec.devices), ("seeds", spec.seeds),
                         ("latent dims", spec.latent_dims)):
        if not values:
            raise HarnessError(f"the sweep names no {name}")
        if len(set(values)) != len(values):
            raise HarnessError(f"{name} repeat a value: {', '.join(map(str, values))}")
    if spec.epochs < 1:
        raise HarnessError(f"epochs must be a positive integer, not {spec.epochs}")
    if spec.precision not in PRECISIONS:
        raise HarnessError(f"precision {spec.precision!r}: choose from {', '.join(PRECISIONS)}")
    backends.check_options({"torch-compile": {"mode": spec.compile_mode}})
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
            out.append(devices.resolve_device(device, frameworks))
    return list(dict.fromkeys(out))  # auto may resolve to a device also named explicitly


def add_subcommands(sub) -> None:
    """`harness sweep`: called by harness.cli for every module in SUBCOMMAND_MODULES."""
    p = sub.add_parser("sweep", help="run backend x device x seed x latent-size jobs, locally or on Ray",
                       description="Every job is one `harness run` in its own sub-folder of --out; "
                                   "DIR/sweep.json holds the jobs and their statistics.")
    p.add_argument("--spec", type=Path, default=None, metavar="FILE",
                   help="TOML file with the same fields as the flags (flags given win)")
    p.add_argument("--backends", type=flags.backend_list, default=None,
                   help=f"comma-separated, from: {', '.join(backends.known())} (default {flags.DEFAULT_BACKENDS})")
    p.add_argument("--device", dest="devices", action="append", type=_device_list, default=None,
                   help="cpu, cuda or auto; repeat or comma-separate for several (default cpu)")
    p.add_argument("--seeds", type=flags.seed_list, default=None,
                   help=f"like 1-5 or 1,3,7 (default {DEFAULT_SEEDS})")
    p.add_argument("--latent-dims", dest="latent_dims", type=_int_list, default=None,
                   help=f"latent sizes, like 2,5,10,20 (default {ModelConfig().latent_dim})")
    p.add_argument("--workload", choices=workloads.names(), default=None,
                   help=f"what every job trains (default {workloads.DEFAULT})")
    p.add_argument("--epochs", type=flags.positive_int, default=None, help="per job (default 10)")
    p.add_argument("--threads", type=flags.positive_int, default=None,
                   help="CPU threads per job (default: every core of the machine, or of the Ray node)")
    p.add_argument("--compile-mode", dest="compile_mode", default=None,
                   choices=backends.COMPILE_MODES, help="torch-compile's torch.compile mode")
    p.add_argument("--allow-tf32", dest="allow_tf32", action="store_true")
    p.add_argument("--timeout", type=flags.non_negative_float, default=None, help="seconds per job (0 = none)")
    p.add_argument("--target-loss", dest="target_loss", type=float, default=None)
    p.add_argument("--cold-compile", dest="cold_compile", action="store_true", default=None,
                   help="every job compiles from empty jax/Inductor caches (recorded as cold or warm)")
    for flag in ("--train-limit", "--test-limit"):  # tests train on a few hundred samples
        p.add_argument(flag, type=flags.positive_int, default=None, help=argparse.SUPPRESS)
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
        changed = sorted(set(given) - {"executor", "address", "max_retries"})
        extra = changed + (["spec"] if args.spec else []) + (["out"] if args.out else [])
        if extra:
            raise HarnessError(f"--resume takes the sweep from {args.resume / SWEEP_FILE}; drop "
                               f"{', '.join('--' + c.replace('_', '-') for c in extra)}")
        state = load(args.resume)
        state.spec = build_spec({**state.spec.to_dict(), **given})
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

