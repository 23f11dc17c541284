"""The jobs a run's config makes: one backend on one device with one seed, or with several seeds as
one ensemble; each is trained by one child process (harness.execution.runner)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import backends
from harness.config import RunConfig


@dataclass(frozen=True)
class Job:
    """One backend on one device with one seed, or with several as one ensemble, trained by one child."""

    backend: str
    device: str
    seed: int
    config: RunConfig
    ensemble: tuple[int, ...] = ()  # the seeds trained together (EnsembleBackend); empty: `seed` alone

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.ensemble or (self.seed,)

    def folder(self, run_dir: Path) -> Path:
        """Where the child's job file and log live: the backend's folder, or a seed's in a multi-seed run."""
        several = len(self.config.run_seeds()) > 1
        return run_dir / self.backend / (member_folder(self.seed) if several and not self.ensemble else "")


def member_folder(seed: int) -> str:
    """A seed's sub-folder of its backend's folder in a run of several seeds."""
    return f"seed-{seed}"


def has_ensemble(backend: str) -> bool:
    """Whether `backend` can train several seeds as one ensemble (torch-reference cannot)."""
    backends.check_names([backend])
    return bool(backends.REGISTRY[backend].ensemble)


def jobs_for(config: RunConfig) -> list[Job]:
    """One job per backend and seed, or with --ensemble one per backend that has an ensemble engine."""
    seeds = config.run_seeds()
    jobs: list[Job] = []
    for name in config.backends:
        if config.ensemble and has_ensemble(name):
            jobs.append(Job(name, config.device, seeds[0], config, ensemble=seeds))
        else:
            jobs.extend(Job(name, config.device, seed, config) for seed in seeds)
    return jobs
