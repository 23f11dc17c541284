"""The child's side of the one way the harness starts a child (harness/execution/child_process.py).

Every child (a training worker, one backend's parity, an IWAE evaluator, the probe) is started as
`python -m MODULE JOB.json`, already pinned to its cores by the parent, and answers through `serve`:
JSON-line events on a private copy of stdout (anything a library prints goes to stderr, which the
parent keeps in a log), and any HarnessError or MemoryError as one `error` event and a non-zero exit.
Imports nothing but the standard library and harness.errors, so a child imports it before a framework.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError

EXIT_ERROR, EXIT_MEMORY = 2, 3


class Events:
    """JSON-lines channel to the parent on a private duplicate of fd 1."""

    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # stray prints from frameworks must not corrupt the channel
        sys.stdout = sys.stderr

    def send(self, event: str, **fields) -> None:
        self.out.write(json.dumps({"event": event, **fields}) + "\n")
        self.out.flush()


def pin_threads(threads: int, cores: list[int] | None = None) -> int:
    """Use the first `threads` of `cores` (the job spec's, else this process's affinity); torch obeys
    set_num_threads, XLA sizes its pool by the affinity."""
    cores = sorted(cores or os.sched_getaffinity(0))
    threads = min(threads or len(cores), len(cores))
    os.sched_setaffinity(0, cores[:threads])
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def serve(argv: list[str], work: Callable[[dict, Events], None]) -> int:
    """Read the job from argv[0], run `work(job, events)`; errors become one `error` event and an exit code."""
    events = Events()
    job = json.loads(Path(argv[0]).read_text())
    try:
        work(job, events)
    except HarnessError as exc:
        events.send("error", message=str(exc))
        return EXIT_ERROR
    except MemoryError:
        events.send("error", message="out of memory")
        return EXIT_MEMORY
    return 0
