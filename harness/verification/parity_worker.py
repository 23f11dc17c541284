"""The child process of one backend's lockstep parity: `python -m harness.verification.parity_worker JOB`.

JOB names the backend, the run's config and the pickled oracle chain (or, for `--ensemble N`, the N
members' chains), written by harness.verification.parity.run. Started by the one launcher
(harness.execution.child_process), already pinned; it imports the framework only then, runs the
teacher-forced steps (in the compile caches its parent's environment names) and answers with one
`parity` event: the reports, with the framework versions it ran.
"""
from __future__ import annotations

import dataclasses
import pickle
import sys
from pathlib import Path

from harness.channel import Events, pin_threads, serve


def work(job: dict, events: Events) -> None:
    from harness.config import RunConfig
    config = RunConfig.from_dict(job["config"])
    pin_threads(config.threads)
    from backends.info import framework_info
    from harness.verification.parity import run_backend, run_ensemble  # imports the registry, after pinning
    chain = pickle.loads(Path(job["chain"]).read_bytes())
    if job.get("ensemble"):
        reports = run_ensemble(job["backend"], chain, config)
    else:
        reports = [run_backend(job["backend"], chain, config, job["free_running"])]
    for report in reports:
        report.frameworks = framework_info(job["backend"], config)
    events.send("parity", reports=[dataclasses.asdict(r) for r in reports])


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:], work))
