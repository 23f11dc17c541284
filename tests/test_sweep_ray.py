"""The Ray executor on a real two-node Ray cluster on loopback, against the local executor.

The cluster lives in network, PID and mount namespaces of its own (`unshare`, root): only loopback is up,
so Ray binds 127.0.0.1 and no cluster traffic can leave the machine, and `ray stop` sees only this test's
processes. The second node runs in a nested PID namespace, so "kill the node" is one SIGKILL to that
namespace's init: the kernel then kills every process of the node, the job's training child included.
When the outer namespace's init exits, anything left is killed too: no process outlives the test.

This file is also the script that runs inside the namespace (`python tests/test_sweep_ray.py --inside`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
PORT = 6380  # free by construction: the namespace has its own network stack
TRAIN, TEST = "256", "256"


def tiny_backends() -> tuple[str, str]:
    """(backends, seeds) of a four-job sweep: torch and a second cheap backend, else torch with four seeds."""
    for other in ("torch-reference", "jax"):
        module = {"torch-reference": "backends.torch.reference", "jax": "backends.jax.engine"}[other]
        framework = other.split("-")[0]
        if importlib.util.find_spec(module) and importlib.util.find_spec(framework):
            return f"torch,{other}", "1-2"
    return "torch", "1-4"


def sweep_argv(out: Path, data_dir: str, backends: str, seeds: str, *extra: str) -> list[str]:
    return ["sweep", "--backends", backends, "--device", "cpu", "--seeds", seeds, "--epochs", "1",
            "--train-limit", TRAIN, "--test-limit", TEST, "--data-dir", data_dir, "--out", str(out),
            "--no-report", *extra]


# -------------------------------------------------------------------------------- inside the namespace

def _ray(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    ray = str(Path(sys.executable).parent / "ray")
    return subprocess.run([ray, *args], env=env, check=check, capture_output=True, text=True, timeout=120)


def _wait_for_nodes(n: int, timeout: float = 90.0) -> list[dict]:
    """The alive nodes (address, id, head or not) once there are n of them."""
    import ray
    ray.init(address=f"127.0.0.1:{PORT}", logging_level="ERROR", log_to_driver=False)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = [{"address": node["NodeManagerAddress"], "id": node["NodeID"],
                      "head": "node:__internal_head__" in node["Resources"]}
                     for node in ray.nodes() if node["Alive"]]
            if len(alive) >= n:
                return alive
            time.sleep(0.2)
        raise TimeoutError(f"only {len(alive)} of {n} Ray nodes came up")
    finally:
        ray.shutdown()


def _job_id(job_file: dict) -> str:
    """The sweep's name for the job a runner's job.json describes."""
    latent = job_file["config"]["model"]["latent_dim"]
    return f"{job_file['backend']}-{job_file['device']}-z{latent}-s{job_file['seed']}"


def _pid_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def _training_child_in(namespace: str) -> tuple[int, dict] | None:
    """(pid, job.json) of a job's training child (harness.execution.worker) running in the PID namespace, if any."""
    import psutil
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        try:
            if "harness.execution.worker" in cmdline and _pid_namespace(proc.pid) == namespace:
                return proc.pid, json.loads(Path(cmdline[-1]).read_text())  # the job file is its argument
        except (OSError, ValueError, psutil.Error):
            continue
    return None


def inside(out: Path, data_dir: str, backends: str, seeds: str) -> None:
    """Start two nodes, run the equality sweep, run a sweep while killing node 2, stop Ray."""
    import psutil
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    temp = tempfile.mkdtemp(prefix="vb-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    info: dict = {"temp_dir": temp}
    node2 = None
    t0 = time.monotonic()
    try:
        _ray("start", "--head", "--port", str(PORT), "--num-cpus", "1", "--disable-usage-stats",
             "--include-dashboard=false", f"--temp-dir={temp}", env=env)
        ray = str(Path(sys.executable).parent / "ray")
        node2 = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", ray, "start",
                                  "--address", f"127.0.0.1:{PORT}", "--num-cpus", "1", "--disable-usage-stats",
                                  "--block"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        info["nodes"] = _wait_for_nodes(2)
        info["start_seconds"] = time.monotonic() - t0
        address = ["--executor", "ray", "--address", f"127.0.0.1:{PORT}"]
        cli = [sys.executable, "-m", "harness"]

        t = time.monotonic()
        done = subprocess.run(cli + sweep_argv(out / "ray", data_dir, backends, seeds, *address),
                              env=env, capture_output=True, text=True, timeout=300)
        info["ray_sweep"] = {"rc": done.returncode, "seconds": time.monotonic() - t, "stderr": done.stderr[-3000:]}

        # Kill node 2 while it trains a job: the whole node, its job's training child included.
        node2_init = psutil.Process(node2.pid).children()[0].pid  # pid 1 of the node's PID namespace
        namespace = _pid_namespace(node2_init)
        t = time.monotonic()
        sweep = subprocess.Popen(cli + sweep_argv(out / "ray-kill", data_dir, "torch", "1-2", *address),
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        victim = None
        while victim is None and sweep.poll() is None and time.monotonic() - t < 120:
            victim = _training_child_in(namespace)
            time.sleep(0.05)
        if victim is not None:
            os.kill(node2_init, signal.SIGKILL)
            node2.wait(30)
        output, _ = sweep.communicate(timeout=300)
        info["kill_sweep"] = {"rc": sweep.returncode, "seconds": time.monotonic() - t, "output": output[-3000:],
                              "killed_job": victim and _job_id(victim[1])}
    finally:
        t = time.monotonic()
        _ray("stop", "--force", env=env, check=False)
        info["stop_seconds"] = time.monotonic() - t
        if node2 is not None and node2.poll() is None:
            node2.kill()
            node2.wait()
        (out / "cluster.json").write_text(json.dumps(info, indent=1))
        shutil.rmtree(temp, ignore_errors=True)


# -------------------------------------------------------------------------------- the tests

def _unshare_problem() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is not installed"
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network and PID namespaces (needs root): {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """Run the local sweep here and the Ray sweeps inside the namespace; return (out folder, info)."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install -e '.[ray]')")
    problem = _unshare_problem()
    if problem:
        pytest.skip(problem)
    from harness import cli, data
    from harness.errors import HarnessError
    try:
        data_dir, _ = data.locate()  # fetched here if need be: the namespace has no network
    except HarnessError as e:
        pytest.skip(f"no MNIST for the Ray tests: {e}")
    out = tmp_path_factory.mktemp("ray-sweeps")
    backends, seeds = tiny_backends()
    keep_bash = '"$@"; rc=$?; exit $rc'  # not exec'd: bash stays the namespace's pid 1 and reaps orphans
    inside_argv = [sys.executable, str(Path(__file__).resolve()), "--inside", str(out), str(data_dir),
                   backends, seeds]
    cluster = subprocess.Popen(["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child",
                                "bash", "-c", keep_bash, "bash", *inside_argv], cwd=REPO)
    try:
        # The local sweep runs while the cluster starts: with one thread per job its numbers do not
        # depend on the load, and the test is shorter by the cluster's start-up time.
        assert cli.main(sweep_argv(out / "local", str(data_dir), backends, seeds, "--threads", "1")) == 0
        assert cluster.wait(timeout=540) == 0
    finally:
        if cluster.poll() is None:
            cluster.kill()  # --kill-child: the namespace init goes too, and with it every process in it
            cluster.wait()
    return out, json.loads((out / "cluster.json").read_text())


def _jobs(sweep_dir: Path) -> dict[str, dict]:
    return {j["run_dir"]: j for j in json.loads((sweep_dir / "sweep.json").read_text())["jobs"]}


def _epochs(job_dir: Path) -> list[tuple]:
    result = json.loads((job_dir / "results.json").read_text())["results"][0]
    return [(e["epoch"], e["train_loss"], e["metrics"]) for e in result["epochs"]]


def _params(job_dir: Path) -> dict[str, np.ndarray]:
    result = json.loads((job_dir / "results.json").read_text())["results"][0]
    with np.load(job_dir / result["backend"] / result["params_file"]) as z:
        return {k: z[k] for k in z.files}


def _assert_same_numbers(local: Path, ray: Path, job: str) -> None:
    assert _epochs(ray / job) == _epochs(local / job), job  # exact: same code, data, seeds and threads
    a, b = _params(local / job), _params(ray / job)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{job} {k}")


@pytest.mark.ray
def test_ray_sweep_equals_local_number_for_number(cluster_run):
    out, info = cluster_run
    assert info["ray_sweep"]["rc"] == 0, info["ray_sweep"]["stderr"]
    assert [n["address"] for n in info["nodes"]] == ["127.0.0.1", "127.0.0.1"]  # loopback only
    local, ray = _jobs(out / "local"), _jobs(out / "ray")
    assert local.keys() == ray.keys() and len(ray) == 4
    nodes = {j["node"] for j in ray.values()}
    assert len(nodes) == 2, nodes  # both nodes ran jobs
    for job_id, job in ray.items():
        assert job["status"] == "ok", job
        result = json.loads((out / "ray" / job_id / "results.json").read_text())
        assert result["config"]["threads"] == 1  # every CPU of a 1-CPU node, like --threads 1 locally
        _assert_same_numbers(out / "local", out / "ray", job_id)
    summary = json.loads((out / "ray" / "sweep.json").read_text())["summary"]
    local_summary = json.loads((out / "local" / "sweep.json").read_text())["summary"]
    for s, l in zip(summary, local_summary):
        for key in ("test_loss_mean", "test_loss_sampled_mean", "test_loss_std"):
            assert s[key] == l[key]


@pytest.mark.ray
def test_killed_node_job_is_retried_or_recorded(cluster_run):
    out, info = cluster_run
    kill = info["kill_sweep"]
    assert kill["killed_job"], f"no job was seen training on node 2: {kill['output']}"
    assert kill["rc"] in (0, 1), kill["output"]  # 1: a job failed, which is allowed if it says why
    jobs = _jobs(out / "ray-kill")
    assert len(jobs) == 2 and all(j["status"] in ("ok", "failed") for j in jobs.values()), kill["output"]
    head = next(n["id"] for n in info["nodes"] if n["head"])
    killed = jobs[kill["killed_job"]]
    if killed["status"] == "ok":  # Ray retried it on the head: the same numbers as ever
        assert f"ray node {head[:8]}" in killed["node"], killed
    else:
        assert "retries" in killed["error"], killed
    for job_id, job in jobs.items():
        if job["status"] == "ok":
            _assert_same_numbers(out / "local", out / "ray-kill", job_id)
    other = next(j for job_id, j in jobs.items() if job_id != kill["killed_job"])
    assert other["status"] == "ok"  # nothing finished (or running elsewhere) is lost


@pytest.mark.ray
def test_cluster_leaves_no_process_behind(cluster_run):
    import psutil
    out, info = cluster_run
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if info["temp_dir"] in cmdline or f"127.0.0.1:{PORT}" in cmdline:
            left.append((proc.pid, cmdline[:200]))
    assert not left


if __name__ == "__main__" and sys.argv[1:2] == ["--inside"]:
    sys.path.insert(0, str(REPO))
    inside(Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
