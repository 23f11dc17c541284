"""What a sweep is and where it stands: the spec, its jobs, an executor's outcome, and DIR/sweep.json.

`DIR/sweep.json` holds the spec, every job (backend, device, seed, latent_dim, status, run_dir, error,
timings) and the statistical `summary` (harness/measurement/stats.py). The running of a sweep, which
rewrites it after every job, is harness/sweeps/sweep.py; the executors that run the jobs import their
types from here.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import atomic
from harness.config import ModelConfig, RunConfig, parse_seeds
from harness.errors import HarnessError
from harness.execution.jobs import has_ensemble
from harness.measurement import measure, results

SWEEP_FILE = "sweep.json"
SCHEMA_VERSION = 2  # 2: a job's final test metrics are one dict (1: test_loss, test_loss_sampled)
EXECUTORS = ("local", "ray")
# A job in one of these states ran to its end; --resume skips it. A diverged job is a result, not a fault.
FINISHED = ("ok", "diverged")
DEFAULT_SEEDS = "1-5"


# The settings of sweep.json schema 2 specs that were written flat, before the spec held a base RunConfig.
_FLAT_SETTINGS = ("epochs", "threads", "precision", "timeout", "train_limit", "test_limit", "target_loss",
                  "cold_compile")


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep was asked to do: a base RunConfig, the axes it crosses, and where the jobs run.

    Every job is `base` with the job's backend, device, seed and latent size put in by
    `dataclasses.replace` (`job_config`): whatever `harness run` takes as an experiment flag, a sweep
    takes too (harness/cli/flags.py defines each flag once for both). The base's own backends are the
    sweep's (so its engine options are checked against them); its device, seed and latent size are the
    axes' first values.
    """

    base: RunConfig
    backends: tuple[str, ...]
    devices: tuple[str, ...] = ("cpu",)
    seeds: tuple[int, ...] = tuple(parse_seeds(DEFAULT_SEEDS))
    latent_dims: tuple[int, ...] = (ModelConfig().latent_dim,)
    executor: str = "local"
    address: str | None = None  # Ray cluster, HOST:PORT; None = $RAY_ADDRESS or a local Ray instance
    max_retries: int = 2  # Ray retries of a job whose worker or node died

    def jobs(self) -> list[SweepJob]:
        """Every job, seeds outermost so that all backends of one seed run next to each other in time.

        With `base.ensemble`, a backend's seeds (of one device and latent size) are one ensemble: one job
        per seed still, each naming the ensemble, sharing one run folder, trained together (`leaders`)."""
        jobs = []
        for z in self.latent_dims:
            for s in self.seeds:
                for d in self.devices:
                    for b in self.backends:
                        group = self.seeds if self.base.ensemble and has_ensemble(b) else ()
                        run_dir = f"{b}-{d.replace(':', '')}-z{z}-ensemble-s{'-'.join(map(str, group))}" if group else ""
                        jobs.append(SweepJob(backend=b, device=d, seed=s, latent_dim=z, ensemble=tuple(group),
                                             run_dir=run_dir))
        return jobs

    def job_config(self, job: SweepJob, threads: int) -> RunConfig:
        """The RunConfig of one job: a `harness run` of one backend, with this latent size; `threads` is
        what the executor gives it (base.threads, 0 = every core, resolved where the job runs)."""
        return dataclasses.replace(
            self.base, backends=(job.backend,), device=job.device, seed=job.seed, threads=threads,
            seeds=tuple(job.ensemble),
            engine_options={b: dict(o) for b, o in self.base.engine_options.items() if b == job.backend},
            model=dataclasses.replace(self.base.model, latent_dim=job.latent_dim))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        """From sweep.json; a spec written flat (before it held a base RunConfig) is migrated here."""
        d = dict(d)
        if "base" in d:
            base = RunConfig.from_dict(d.pop("base"))
        else:
            # Those sweeps' jobs took RunConfig's defaults for what the spec did not name (harness noise).
            mode = d.pop("compile_mode", "default")
            model = ModelConfig(workload=d.pop("workload", ModelConfig().workload))
            base = RunConfig(backends=tuple(d.get("backends", ())), model=model,
                             engine_options={"torch-compile": {"mode": mode}} if "torch-compile" in d.get("backends", ()) else {},
                             **{k: d.pop(k) for k in _FLAT_SETTINGS if k in d})
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("backends", "devices", "seeds", "latent_dims"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(base=base, **d)


@dataclass
class SweepJob:
    """One job of a sweep and what became of it; `run_dir` is its folder, relative to the sweep's."""

    backend: str
    device: str
    seed: int
    latent_dim: int
    ensemble: tuple[int, ...] = ()  # the seeds this job trains with as one ensemble, itself included
    status: str = "pending"  # results.STATUSES; "running" also covers a job queued on Ray
    run_dir: str = ""
    error: str | None = None
    attempts: int = 0            # times the driver started it (a Ray retry after a node death is inside one)
    node: str | None = None      # where it ran: the host, and the Ray node for the ray executor
    cores: list[int] | None = None  # the CPU cores it was pinned to (concurrent GPU jobs get disjoint ones)
    wall_seconds: float | None = None      # as the driver saw it, results written
    work_seconds: float | None = None      # setup + compile + training + eval, as the child measured it
    overhead_seconds: float | None = None  # wall - work: process start, imports, data, transfer, writing
    metrics: dict[str, float] | None = None  # the final epoch's test metrics, by the workload's names
    samples_per_second: float | None = None  # training throughput (measure.summarize) on this basis:
    throughput_basis: str | None = None      # "steady", or "first epoch" for a 1-epoch job

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir or self.id

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.device.replace(':', '')}-z{self.latent_dim}-s{self.seed}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepJob:
        d = dict(d)
        if "metrics" not in d and d.get("test_loss") is not None:  # sweep.json schema 1: the VAE's two fields
            d["metrics"] = {k: d[k] for k in ("test_loss", "test_loss_sampled") if d.get(k) is not None}
        d["ensemble"] = tuple(d.get("ensemble", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def leaders(jobs: list[SweepJob]) -> dict[str, list[SweepJob]]:
    """The jobs an executor runs, each with the jobs its run trains ({run_dir: [leader, members...]}):
    a job of its own, or the first seed of an ensemble with every seed of it."""
    groups: dict[str, list[SweepJob]] = {}
    for job in jobs:
        groups.setdefault(job.run_dir, []).append(job)
    return groups


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
        d = {**dataclasses.asdict(self), "spec": self.spec.to_dict()}
        d["kind"] = "sweep"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepState:
        return cls(spec=SweepSpec.from_dict(d["spec"]), jobs=[SweepJob.from_dict(j) for j in d["jobs"]],
                   summary=d.get("summary", []), command=d.get("command", ""),
                   environment=d.get("environment", {}), started=d.get("started", ""),
                   updated=d.get("updated", ""), wall_seconds=d.get("wall_seconds", 0.0),
                   schema_version=SCHEMA_VERSION)  # read into this version's shape, so written as it


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


def new_state(spec: SweepSpec, command: str) -> SweepState:
    return SweepState(spec=spec, jobs=spec.jobs(), command=command, environment=measure.environment(),
                      started=_now())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
