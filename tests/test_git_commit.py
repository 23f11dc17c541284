"""The commit recorded in results.json is the project's own, or "unknown" when the source tree is not a
git checkout of its own (issue 27: a copy without .git inside another repository recorded that
repository's commit)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def recorded_git(source: Path) -> dict:
    """git_info() as the copy's own harness records it (imported from the copy, not from this checkout)."""
    code = "import json; from harness.measurement.measure import environment; print(json.dumps(environment()['git']))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(source)})
    return json.loads(proc.stdout)


def copy_source(dest: Path) -> Path:
    shutil.copytree(ROOT / "harness", dest / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_a_copy_inside_another_repository_records_unknown(tmp_path):
    outer = tmp_path / "outer"
    project = copy_source(outer / "vendored" / "vae-bench")
    git(outer, "init", "-q")
    git(outer, "add", ".")
    git(outer, "commit", "-q", "-m", "outer")
    assert git(outer, "rev-parse", "HEAD")  # the enclosing repository has a commit that must not be recorded
    assert recorded_git(project) == {"commit": "unknown", "dirty": None}


def test_a_copy_outside_any_repository_records_unknown(tmp_path):
    assert recorded_git(copy_source(tmp_path / "plain")) == {"commit": "unknown", "dirty": None}


def test_a_checkout_records_its_own_commit(tmp_path):
    outer = tmp_path / "outer"
    project = copy_source(outer / "vae-bench")
    git(outer, "init", "-q")
    git(outer, "commit", "-q", "--allow-empty", "-m", "outer")
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "project")
    own = git(project, "rev-parse", "HEAD")
    assert recorded_git(project) == {"commit": own, "dirty": False}
    (project / "harness" / "__init__.py").write_text("# edited\n" + (project / "harness" / "__init__.py").read_text())
    assert recorded_git(project) == {"commit": own, "dirty": True}
