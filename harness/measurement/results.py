"""The results file: records of a run, their schema, and atomic incremental writing.

`DIR/results.json` is rewritten (atomically) after every finished epoch of every backend, so a crash
or Ctrl-C loses at most the epoch in flight. Everything a report needs is in it or beside it
(`DIR/<backend>/params.npz`); see the README for the schema.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import atomic
from harness.config import RunConfig
from harness.errors import HarnessError

# 2: an epoch's test metrics are a dict named by the workload (1: fixed test_loss, test_loss_sampled fields)
SCHEMA_VERSION = 2
RESULTS_FILE = "results.json"

# Status of one backend's job. "ok" is the only one that means every requested epoch finished.
STATUSES = ("pending", "running", "ok", "failed", "diverged", "interrupted", "unavailable")


@dataclass
class EpochRecord:
    """What one epoch of one backend measured. Losses are per sample; seconds are device-synchronised."""

    epoch: int
    train_loss: float
    # The workload's test metrics by name, per test image, in its order: the first is the primary one
    # (workloads.spec.Workload.metrics; for the VAEs test_loss with z = mu, then one sampled z).
    metrics: dict[str, float]
    train_seconds: float
    eval_seconds: float
    samples_per_second: float       # training samples per second of this epoch
    eval_samples_per_second: float
    elapsed_seconds: float          # since the job started, compile included (for time to quality)

    @classmethod
    def from_dict(cls, d: dict) -> "EpochRecord":
        """From results.json; schema 1 stored the VAE's two metrics as fields of their own."""
        d = dict(d)
        if "metrics" not in d:
            d["metrics"] = {k: d.pop(k) for k in ("test_loss", "test_loss_sampled") if k in d}
        return cls(**d)

    def value(self, name: str) -> float:
        """`train_loss` or one of the test metrics, by name (targets hold bands for both)."""
        return self.train_loss if name == "train_loss" else self.metrics[name]

    @property
    def primary(self) -> float:
        """The workload's primary test metric (the first it declares)."""
        return next(iter(self.metrics.values()))


@dataclass
class BackendResult:
    """One job: one backend on one device with one seed."""

    backend: str
    device: str
    seed: int
    status: str = "pending"
    error: str | None = None
    epochs: list[EpochRecord] = field(default_factory=list)
    compile_seconds: float | None = None
    compile_cache: str | None = None  # harness.execution.caches.STATES: cold, warm, unknown or none
    first_epoch_seconds: float | None = None
    setup_seconds: float | None = None
    threads: int | None = None
    cores: list[int] | None = None  # the CPU cores the job was pinned to
    memory: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # derived by harness.measurement.measure.summarize
    backend_info: dict[str, Any] = field(default_factory=dict)  # framework versions, compile mode, ...
    repeat_seconds: list[float] = field(default_factory=list)  # --repeats: extra timed epochs
    stderr_tail: str | None = None
    params_file: str | None = None
    # Where the job's wall time went, by part, and its total (harness.measurement.walltime; {} before it)
    wall_seconds: dict[str, float] = field(default_factory=dict)
    # Estimates computed later from the saved params (`harness evaluate`), e.g. {"iwae": {"k": 5000, ...}}
    evaluation: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.backend, self.device, self.seed)

    @classmethod
    def from_dict(cls, d: dict) -> "BackendResult":
        d = dict(d)
        d["epochs"] = [EpochRecord.from_dict(e) for e in d.get("epochs", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class RunRecord:
    """The whole results file. `config` is the run's parsed RunConfig (written as its dict)."""

    config: RunConfig
    environment: dict[str, Any]
    results: list[BackendResult]
    probe: dict[str, Any] | None = None
    command: str = ""
    # `harness run`'s own wall time by part (harness.measurement.walltime.run_breakdown; {} before it)
    wall_seconds: dict[str, float] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # A config read from a results file, of any version, is parsed once, here, so readers use fields.
        if isinstance(self.config, dict):
            self.config = RunConfig.from_dict(self.config)

    def find(self, backend: str, device: str, seed: int) -> BackendResult | None:
        return next((r for r in self.results if r.key == (backend, device, seed)), None)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        return cls(config=d["config"], environment=d.get("environment", {}),
                   results=[BackendResult.from_dict(r) for r in d.get("results", [])],
                   probe=d.get("probe"), command=d.get("command", ""), wall_seconds=d.get("wall_seconds") or {},
                   schema_version=SCHEMA_VERSION)  # read into this version's shape, so written as it


def finite_epochs(r: BackendResult) -> list[EpochRecord]:
    """Epochs whose losses are numbers (a diverged backend's last epoch may hold nan)."""
    return [e for e in r.epochs if all(math.isfinite(v) for v in e.metrics.values())]


def save(record: RunRecord, run_dir: Path) -> None:
    atomic.write_json(Path(run_dir) / RESULTS_FILE, record.to_dict())


def load(run_dir: str | Path) -> RunRecord:
    """Read DIR/results.json (or a results.json path), refusing missing, corrupt or newer files."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        raise HarnessError(f"{path.parent}: no {RESULTS_FILE} here; is this a run folder?")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{path}: not a readable results file ({exc})") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if not isinstance(version, int):
        raise HarnessError(f"{path}: no schema_version; not a vae-bench results file")
    if version > SCHEMA_VERSION:
        raise HarnessError(f"{path}: schema_version {version} is newer than this harness understands "
                           f"({SCHEMA_VERSION}); upgrade vae-bench")
    try:
        return RunRecord.from_dict(raw)
    except (KeyError, TypeError, AttributeError) as exc:
        raise HarnessError(f"{path}: malformed results file ({exc})") from None
