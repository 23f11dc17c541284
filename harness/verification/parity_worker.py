"""The child process of one backend's lockstep parity: `python -m harness.verification.parity_worker JOB`.

JOB names the backend, the run's config and the pickled oracle chain (harness.verification.parity.run
wrote both). The child pins its threads as a training worker does, imports the framework only then,
runs the teacher-forced steps (in the compile caches its parent's environment names) and prints one JSON
line: the report, with the framework versions it ran.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import sys
from pathlib import Path


def main(job_file: str) -> int:
    from harness.config import RunConfig
    from harness.channel import pin_threads
    job = json.loads(Path(job_file).read_text())
    config = RunConfig.from_dict(job["config"])
    pin_threads(config.threads)
    from backends.info import framework_info
    from harness.verification.parity import run_backend  # imports the registry, after pinning
    chain = pickle.loads(Path(job["chain"]).read_bytes())
    report = run_backend(job["backend"], chain, config, job["free_running"])  # caches: the parent's environment
    report.frameworks = framework_info(job["backend"], config)
    print(json.dumps({"event": "parity", "report": dataclasses.asdict(report)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
