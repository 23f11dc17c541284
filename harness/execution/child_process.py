"""The one way the harness starts a child process: training, one backend's parity, IWAE, the probe.

`run` starts `python -m MODULE JOB.json` with the frameworks' environment (child_env), pinned to its
cores before exec (so torch's and XLA's thread pools are sized by them), feeds its JSON-line events on
(the child's side is harness/channel.py), enforces the timeout and stops it; `call` does the same for
a child that answers with one result. Nothing here knows what a training event means;
harness.execution.runner folds them into the job's result. The child runs in its own session, so
stopping it signals its whole process group, and it is told to die with its parent, so a killed
runner leaves no orphan training on the machine.
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

from harness.errors import HarnessError
from harness.execution.child_env import framework_env

KILL_GRACE_SECONDS = 3.0


def run(job_file: Path, stderr_path: Path, timeout: float, handle,
        module: str = "harness.execution.worker", cores: list[int] | None = None) -> tuple[int | None, bool]:
    """Start `python -m module job_file` (the training worker unless told) on `cores` (default: this
    process's), feed its JSON-line events to `handle`, enforce the timeout; return (code, timed_out)."""
    cores = sorted(cores or os.sched_getaffinity(0))
    env = {**framework_env(), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(len(cores))}
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", module, str(job_file)],
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True,
                                preexec_fn=_prepare_child(cores), env=env)
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


def cores_for(threads: int) -> list[int]:
    """The first `threads` of this process's cores (all of them for 0): what a child is pinned to."""
    return sorted(os.sched_getaffinity(0))[:threads or None]


def call(module: str, job: dict, folder: Path, timeout: float = 0.0, cores: list[int] | None = None) -> dict:
    """Run a child that answers with one `result` event (IWAE, the probe): its fields, or one-line error.

    The job file and the child's stderr are written into `folder`."""
    job_file, stderr_path = folder / f"{module}.json", folder / f"{module}.stderr"
    job_file.write_text(json.dumps(job))
    events: list[dict] = []
    code, timed_out = run(job_file, stderr_path, timeout, events.append, module=module, cores=cores)
    errors = [e["message"] for e in events if e["event"] == "error"]
    answers = [e for e in events if e["event"] == "result"]
    if code == 0 and answers:
        return {k: v for k, v in answers[-1].items() if k != "event"}
    if errors:
        raise HarnessError(f"{module}: {errors[-1]}")
    lines = [line for line in tail(stderr_path).splitlines() if line.strip()]
    why = f"timed out after {timeout:g} s" if timed_out else f"exit {code}"
    raise HarnessError(f"{module} failed ({why}){': ' + lines[-1] if lines else ''}")


def _prepare_child(cores: list[int]):
    """preexec_fn: in the child, before exec, pin it to `cores` and have it die with its parent."""
    return lambda: (os.sched_setaffinity(0, cores), _die_with_parent())


def _die_with_parent() -> None:
    """Get SIGKILL if the runner dies (a killed Ray worker, say), since the child's own session keeps it
    out of the runner's process group."""
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
