"""The child process of one job (training, or one backend's lockstep parity): start it, feed its JSON-line events on, stop it, read its stderr.

Nothing here knows what an event means; harness.execution.runner folds them into the job's result. The
child runs in its own session, so stopping it signals its whole process group, and it is told to die
with its parent, so a killed runner leaves no orphan training on the machine.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.execution.child_env import framework_env

KILL_GRACE_SECONDS = 3.0


def run(job_file: Path, stderr_path: Path, timeout: float, handle,
        module: str = "harness.execution.worker") -> tuple[int | None, bool]:
    """Start `python -m module job_file` (the training worker unless told), feed its JSON-line events to
    `handle`, enforce the timeout; return (code, timed_out)."""
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", module, str(job_file)],
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True,
                                preexec_fn=_die_with_parent, env={**framework_env(), "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout if timeout else None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buffer = b""
    try:
        while True:
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                stop(proc)
                return proc.returncode, True
            if not sel.select(wait):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    handle(json.loads(line))
        return proc.wait(), False
    except BaseException:
        stop(proc)
        raise
    finally:
        sel.close()
        proc.stdout.close()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL if the runner dies (a killed Ray worker, say), since the
    child's own session keeps it out of the runner's process group."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, then SIGKILL after a short grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
