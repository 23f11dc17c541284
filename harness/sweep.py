"""Sweeps: backend x device x seed x latent size, each job one `harness run`, handed to an executor.

`python -m harness sweep --backends torch,jax --device cpu --seeds 1-5 --epochs 3 --out DIR` expands the
spec into jobs and runs each through `runner.execute`, exactly what `harness run --out DIR/<job-id>` does
(same child process, same results.json, same params.npz). `DIR/sweep.json` holds the spec, every job
(backend, device, seed, latent_dim, status, run_dir, error, timings) and the statistical `summary`
(harness/stats.py); it is rewritten atomically after every job, so an interrupted sweep keeps every
finished job and `--resume DIR` reruns only the others. Executors live in harness/executors.py; the
Ray one is imported only when asked for.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import signal
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import backends
from harness import atomic, cli, measure, results
from harness.config import ModelConfig, RunConfig, parse_seeds
from harness.errors import HarnessError
from harness.runner import Interrupted

SWEEP_FILE = "sweep.json"
SCHEMA_VERSION = 1
EXECUTORS = ("local", "ray")
# A job in one of these states ran to its end; --resume skips it. A diverged job is a result, not a fault.
FINISHED = ("ok", "diverged")
DEFAULT_SEEDS = "1-5"


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep was asked to do: the axes it crosses and the settings every job shares."""

    backends: tuple[str, ...]
    devices: tuple[str, ...] = ("cpu",)
    seeds: tuple[int, ...] = tuple(parse_seeds(DEFAULT_SEEDS))
    latent_dims: tuple[int, ...] = (ModelConfig().latent_dim,)
    epochs: int = 10
    threads: int = 0  # 0 = every core of the machine (local) or of the node running the job (ray)
    compile_mode: str = "default"
    precision: str = "float32"
    timeout: float = 0.0
    train_limit: int = 0
    test_limit: int = 0
    target_loss: float = 100.0
    cold_compile: bool = False  # every job compiles from empty caches (harness.caches)
    executor: str = "local"
    address: str | None = None  # Ray cluster, HOST:PORT; None = $RAY_ADDRESS or a local Ray instance
    max_retries: int = 2  # Ray retries of a job whose worker or node died

    def jobs(self) -> list[SweepJob]:
        """Every job, seeds outermost so that all backends of one seed run next to each other in time."""
        return [SweepJob(backend=b, device=d, seed=s, latent_dim=z)
                for z in self.latent_dims for s in self.seeds for d in self.devices for b in self.backends]

    def job_config(self, job: SweepJob, threads: int) -> RunConfig:
        """The RunConfig of one job: a `harness run` of one backend, with this latent size."""
        model = dataclasses.replace(ModelConfig(), latent_dim=job.latent_dim)
        return RunConfig(backends=(job.backend,), device=job.device, epochs=self.epochs, seed=job.seed,
                         threads=threads, compile_mode=self.compile_mode, precision=self.precision,
                         train_limit=self.train_limit, test_limit=self.test_limit, timeout=self.timeout,
                         target_loss=self.target_loss, cold_compile=self.cold_compile, model=model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("backends", "devices", "seeds", "latent_dims"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class SweepJob:
    """One job of a sweep and what became of it; `run_dir` is its folder, relative to the sweep's."""

    backend: str
    device: str
    seed: int
    latent_dim: int
    status: str = "pending"  # results.STATUSES; "running" also covers a job queued on Ray
    run_dir: str = ""
    error: str | None = None
    attempts: int = 0            # times the driver started it (a Ray retry after a node death is inside one)
    node: str | None = None      # where it ran: the host, and the Ray node for the ray executor
    cores: list[int] | None = None  # the CPU cores it was pinned to (concurrent GPU jobs get disjoint ones)
    wall_seconds: float | None = None      # as the driver saw it, results written
    work_seconds: float | None = None      # setup + compile + training + eval, as the child measured it
    overhead_seconds: float | None = None  # wall - work: process start, imports, data, transfer, writing
    test_loss: float | None = None         # final epoch, z = mu
    test_loss_sampled: float | None = None  # final epoch, one sampled z
    samples_per_second: float | None = None  # training throughput (measure.summarize) on this basis:
    throughput_basis: str | None = None      # "steady", or "first epoch" for a 1-epoch job

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir or self.id

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.device.replace(':', '')}-z{self.latent_dim}-s{self.seed}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepJob:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class JobOutcome:
    """What an executor hands back for one job: the job's run record (None if it never produced one)."""

    status: str
    error: str | None = None
    record: results.RunRecord | None = None
    wall_seconds: float | None = None
    node: str | None = None
    resumed: bool = False  # continued from a checkpoint: its wall time covers only the last part


@dataclass
class SweepState:
    """The whole of DIR/sweep.json."""

    spec: SweepSpec
    jobs: list[SweepJob]
    summary: list[dict[str, Any]] = field(default_factory=list)
    command: str = ""
    environment: dict[str, Any] = field(default_factory=dict)  # the driver's machine
    started: str = ""
    updated: str = ""
    wall_seconds: float = 0.0  # summed over the driver's sessions (a resumed sweep adds up)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = "sweep"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepState:
        return cls(spec=SweepSpec.from_dict(d["spec"]), jobs=[SweepJob.from_dict(j) for j in d["jobs"]],
                   summary=d.get("summary", []), command=d.get("command", ""),
                   environment=d.get("environment", {}), started=d.get("started", ""),
                   updated=d.get("updated", ""), wall_seconds=d.get("wall_seconds", 0.0),
                   schema_version=d.get("schema_version", SCHEMA_VERSION))


# ------------------------------------------------------------------------------------ sweep.json

def save(state: SweepState, sweep_dir: Path) -> None:
    state.updated = _now()
    atomic.write_json(sweep_dir / SWEEP_FILE, state.to_dict())


def load(sweep_dir: str | Path) -> SweepState:
    """Read DIR/sweep.json, refusing missing, corrupt or newer files with one line."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise HarnessError(f"{sweep_dir}: no {SWEEP_FILE} here; is this a sweep folder?")
    try:
        raw = json.loads(path.read_text())
        if raw.get("schema_version", 0) > SCHEMA_VERSION:
            raise HarnessError(f"{path}: schema_version {raw['schema_version']} is newer than this harness "
                               f"understands ({SCHEMA_VERSION}); upgrade vae-bench")
        return SweepState.from_dict(raw)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise HarnessError(f"{path}: not a readable sweep file ({exc})") from None


def summary_rows(jobs: list[SweepJob]) -> list[dict[str, Any]]:
    """The inputs of stats.summarize: one row per job that finished ok."""
    keep = ("backend", "device", "latent_dim", "seed", "test_loss", "test_loss_sampled", "samples_per_second",
            "throughput_basis")
    return [{k: getattr(j, k) for k in keep} for j in jobs
            if j.status == "ok" and None not in (j.test_loss, j.test_loss_sampled, j.samples_per_second)]


def apply_outcome(job: SweepJob, outcome: JobOutcome) -> None:
    """Copy an executor's outcome and the job's own record into the sweep's entry for it."""
    job.status, job.error = outcome.status, outcome.error
    job.node, job.wall_seconds = outcome.node, outcome.wall_seconds
    job.work_seconds = job.overhead_seconds = None
    job.test_loss = job.test_loss_sampled = job.samples_per_second = job.throughput_basis = None
    if outcome.record is None or not outcome.record.results:
        return
    result = outcome.record.results[0]
    job.status, job.error, job.cores = result.status, result.error, result.cores
    if result.summary:
        job.test_loss = result.summary["final_test_loss"]
        job.test_loss_sampled = result.summary["final_test_loss_sampled"]
        job.samples_per_second = result.summary["train_samples_per_second"]
        job.throughput_basis = measure.basis_of(result.summary)
    if result.epochs:
        job.work_seconds = (result.setup_seconds or 0.0) + result.epochs[-1].elapsed_seconds
        if job.wall_seconds is not None and not outcome.resumed:
            job.overhead_seconds = job.wall_seconds - job.work_seconds


# ------------------------------------------------------------------------------------ running

def run(state: SweepState, sweep_dir: Path, executor, *,
        say: Callable[[str], None] = lambda line: None) -> SweepState:
    """Run every unfinished job of `state` on `executor`; sweep.json is rewritten after each job."""
    from harness import stats  # pandas and SciPy: imported when a sweep runs, not by every command line
    todo = [j for j in state.jobs if j.status not in FINISHED]
    counter = iter(range(len(state.jobs) - len(todo) + 1, len(state.jobs) + 1))
    base, t0 = state.wall_seconds, time.perf_counter()

    def checkpoint() -> None:
        state.wall_seconds = base + (time.perf_counter() - t0)
        save(state, sweep_dir)

    def on_start(job: SweepJob) -> None:
        job.status, job.error = "running", None
        job.attempts += 1
        checkpoint()

    def on_done(job: SweepJob, outcome: JobOutcome) -> None:
        apply_outcome(job, outcome)
        state.summary = stats.summarize(summary_rows(state.jobs))
        checkpoint()
        say(_job_line(next(counter), len(state.jobs), job))

    checkpoint()
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        executor.run(todo, state.spec, sweep_dir, on_start, on_done)
    except (KeyboardInterrupt, Interrupted):
        for job in todo:
            if job.status in ("pending", "running"):
                job.status, job.error = "interrupted", "the sweep was interrupted"
        checkpoint()
        raise Interrupted(f"interrupted; finished jobs are kept in {sweep_dir / SWEEP_FILE}; "
                          f"continue with: python -m harness sweep --resume {sweep_dir}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return state


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _job_line(i: int, n: int, job: SweepJob) -> str:
    where = f" on {job.node}" if job.node else ""
    if job.status == "ok" and job.test_loss is not None:
        what = f"test_loss {job.test_loss:.2f}, {job.samples_per_second:,.0f} samples/s"
    else:
        what = job.error or ""
    wall = f" ({job.wall_seconds:.1f} s)" if job.wall_seconds is not None else ""
    return f"[{i}/{n}] {job.id}: {job.status}{where}{wall}  {what}"


def new_state(spec: SweepSpec, command: str) -> SweepState:
    return SweepState(spec=spec, jobs=spec.jobs(), command=command, environment=measure.environment(),
                      started=_now())


def prepare_dir(sweep_dir: Path, jobs: list[SweepJob], *, resume: bool, force: bool) -> None:
    """Refuse to mix two sweeps in one folder (--force clears the old one's job folders); check it is writable."""
    if not resume and (sweep_dir / SWEEP_FILE).exists():
        if not force:
            raise HarnessError(f"{sweep_dir} already holds a sweep; use --resume to continue it, "
                               "--force to overwrite it, or another --out")
        try:
            old = load(sweep_dir).jobs
        except HarnessError:  # unreadable: clear the folders this sweep will use, nothing else
            old = []
        for job in old + jobs:  # job folders only: nothing else of the user's is touched
            shutil.rmtree(sweep_dir / job.run_dir, ignore_errors=True)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise HarnessError(f"--out {sweep_dir} exists and is not a folder")
    atomic.ensure_writable_dir(sweep_dir, "sweep folder")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ------------------------------------------------------------------------------------ spec parsing

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


def _coerce(key: str, value: Any) -> Any:
    """A TOML value checked by its flag's parser: lists may be TOML arrays or the flag's text."""
    as_text = ",".join(map(str, value)) if isinstance(value, list) else value
    parse = {"backends": cli.backend_list, "seeds": cli.seed_list, "latent_dims": _int_list,
             "devices": _device_list, "epochs": cli.positive_int, "threads": cli.positive_int,
             "train_limit": cli.positive_int, "test_limit": cli.positive_int, "timeout": cli.non_negative_float,
             "max_retries": cli.non_negative_int, "target_loss": float}.get(key)
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
        raw["precision"] = "tf32"
    return {k: _coerce(k, v) for k, v in raw.items()}


SPEC_FLAGS = ("backends", "devices", "seeds", "latent_dims", "epochs", "threads", "compile_mode", "precision",
              "timeout", "train_limit", "test_limit", "target_loss", "cold_compile", "executor", "address",
              "max_retries")


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
    fields.setdefault("backends", cli.backend_list(cli.DEFAULT_BACKENDS))
    fields.setdefault("target_loss", cli.default_target())
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
            out.append(measure.resolve_device(device, frameworks))
    return list(dict.fromkeys(out))  # auto may resolve to a device also named explicitly


# ------------------------------------------------------------------------------------ command line

def add_subcommands(sub) -> None:
    """`harness sweep`: called by harness.cli for every module in SUBCOMMAND_MODULES."""
    p = sub.add_parser("sweep", help="run backend x device x seed x latent-size jobs, locally or on Ray",
                       description="Every job is one `harness run` in its own sub-folder of --out; "
                                   "DIR/sweep.json holds the jobs and their statistics.")
    p.add_argument("--spec", type=Path, default=None, metavar="FILE",
                   help="TOML file with the same fields as the flags (flags given win)")
    p.add_argument("--backends", type=cli.backend_list, default=None,
                   help=f"comma-separated, from: {', '.join(backends.known())} (default {cli.DEFAULT_BACKENDS})")
    p.add_argument("--device", dest="devices", action="append", type=_device_list, default=None,
                   help="cpu, cuda or auto; repeat or comma-separate for several (default cpu)")
    p.add_argument("--seeds", type=cli.seed_list, default=None,
                   help=f"like 1-5 or 1,3,7 (default {DEFAULT_SEEDS})")
    p.add_argument("--latent-dims", dest="latent_dims", type=_int_list, default=None,
                   help=f"latent sizes, like 2,5,10,20 (default {ModelConfig().latent_dim})")
    p.add_argument("--epochs", type=cli.positive_int, default=None, help="per job (default 10)")
    p.add_argument("--threads", type=cli.positive_int, default=None,
                   help="CPU threads per job (default: every core of the machine, or of the Ray node)")
    p.add_argument("--compile-mode", dest="compile_mode", default=None,
                   choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"))
    p.add_argument("--allow-tf32", dest="allow_tf32", action="store_true")
    p.add_argument("--timeout", type=cli.non_negative_float, default=None, help="seconds per job (0 = none)")
    p.add_argument("--target-loss", dest="target_loss", type=float, default=None)
    p.add_argument("--cold-compile", dest="cold_compile", action="store_true", default=None,
                   help="every job compiles from empty jax/Inductor caches (recorded as cold or warm)")
    for flag in ("--train-limit", "--test-limit"):  # tests train on a few hundred samples
        p.add_argument(flag, type=cli.positive_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--executor", choices=EXECUTORS, default=None, help="local (default) or ray")
    p.add_argument("--address", default=None, metavar="HOST:PORT", help="Ray cluster (--executor ray)")
    p.add_argument("--max-retries", dest="max_retries", type=cli.non_negative_int, default=None,
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
    flags = flag_values(args)
    if args.resume:
        # Where to run may change on resume (say, finish a Ray sweep locally); what to run may not.
        changed = sorted(set(flags) - {"executor", "address", "max_retries"})
        extra = changed + (["spec"] if args.spec else []) + (["out"] if args.out else [])
        if extra:
            raise HarnessError(f"--resume takes the sweep from {args.resume / SWEEP_FILE}; drop "
                               f"{', '.join('--' + c.replace('_', '-') for c in extra)}")
        state = load(args.resume)
        state.spec = build_spec({**state.spec.to_dict(), **flags})
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

    from harness import executors
    from harness.console import console

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
        from harness import sweep_report
        console.print(f"report: {sweep_report.write_sweep_report(sweep_dir, sweep_dir)}")
    failed = [j for j in state.jobs if j.status != "ok"]
    for job in failed:
        console.print(f"[red]{job.id}: {job.status}[/red]: {escape(job.error or '')}")
    return 0 if not failed else 1


def summary_table(state: SweepState):
    """The summary as a rich table: mean (95 % interval) per backend x device x latent size."""
    from rich.table import Table

    table = Table(title="sweep summary: mean (95% CI) over seeds; test_loss: z = mu; sampled: one z ~ q(z|x)")
    for col in ("backend", "device", "latent", "n", "test_loss", "test_loss_sampled", "samples/s",
                "fastest is x faster"):
        table.add_column(col, justify="left" if col in ("backend", "device") else "right")
    for s in state.summary:
        speed = "-"
        if s["backend"] != s["fastest"] and s["speedup_of_fastest"] is not None:
            speed = f"{s['fastest']} " + fmt_ci(*_ci(s, "speedup_of_fastest", "speedup"), ".2f", "x")
        table.add_row(s["backend"], s["device"], str(s["latent_dim"]), str(s["n"]),
                      fmt_ci(*_ci(s, "test_loss_mean", "test_loss")),
                      fmt_ci(*_ci(s, "test_loss_sampled_mean", "test_loss_sampled")),
                      fmt_ci(*_ci(s, "samples_per_second_mean", "samples_per_second"), ",.0f"), speed)
    return table


def _ci(entry: dict[str, Any], point: str, prefix: str) -> tuple[float | None, float | None, float | None]:
    """(estimate, low, high) of one summary entry's `point` field and its `prefix`_ci_low/high fields."""
    return entry[point], entry[f"{prefix}_ci_low"], entry[f"{prefix}_ci_high"]


def fmt_ci(mean: float | None, low: float | None, high: float | None, spec: str = ".2f", unit: str = "") -> str:
    """'119.83 (119.10–120.55)', or the mean alone when there is no interval (one seed).

    An en dash separates the bounds, so that a negative bound still reads right.
    """
    if mean is None:
        return "-"
    if low is None or high is None:
        return f"{mean:{spec}}{unit}"
    return f"{mean:{spec}}{unit} ({low:{spec}}–{high:{spec}})"
