"""Report and compare on a real, short run: sections, images, failures, flagged changes, bad folders.

One real `harness run` (torch, 2 epochs, 512 training samples) per module; everything else edits copies
of its results.json. Needs torch and the MNIST cache, like the run itself.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.reporting import report
from harness.verification import compare

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("torch")


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def edit_results(run_dir: Path, edit) -> None:
    path = run_dir / "results.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real short run with a fake failed backend added beside the real one."""
    out = tmp_path_factory.mktemp("run") / "run"
    proc = harness("run", "--backends", "torch", "--epochs", "2", "--train-limit", "512", "--test-limit", "256",
                   "--threads", "1", "--no-probe", "--no-report", "--out", str(out))  # one thread: compare is exact
    assert proc.returncode == 0, proc.stderr[-2000:]

    def add_failed(raw: dict) -> None:
        fake = dict(raw["results"][0], backend="jax", status="failed", error="boom", epochs=[], summary={},
                    memory={}, params_file=None, compile_seconds=None, first_epoch_seconds=None)
        raw["results"].append(fake)
    edit_results(out, add_failed)
    return out


@pytest.fixture(scope="module")
def report_md(run_dir: Path, tmp_path_factory) -> tuple[Path, str]:
    path = report.write_report([run_dir], tmp_path_factory.mktemp("report"))
    return path, path.read_text()


def test_report_has_every_section_in_order(report_md):
    _, text = report_md
    headings = ["## Verdict", "## Summary", "### Device: cpu", "## Loss curves", "## Throughput",
                "## Reconstructions and samples", "## Environment", "## Reproduce"]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions)
    assert "python -m harness run --backends torch --epochs 2" in text  # the exact command
    assert "| torch " in text and "test_loss_sampled" in text


def test_every_referenced_image_is_a_png(report_md):
    path, text = report_md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    # loss, throughput, and torch's reconstructions and samples; none for the failed backend
    assert len(links) == 4
    assert not any("jax" in link for link in links)
    for link in links:
        assert not Path(link).is_absolute()
        assert (path.parent / link).read_bytes()[:8] == PNG_SIGNATURE


def test_failed_backend_shows_status_and_error(report_md):
    _, text = report_md
    verdict = text.split("## Verdict", 1)[1].split("## Summary", 1)[0]
    assert "jax (cpu) failed (boom)" in verdict
    assert re.search(r"\| jax\s+\| failed\s+\|", text)
    assert "**jax (cpu)**: failed: boom" in text


def test_compare_flags_an_injected_change(run_dir, tmp_path):
    new = tmp_path / "new"
    shutil.copytree(run_dir, new)

    def worse_and_slower(raw: dict) -> None:
        for e in raw["results"][0]["epochs"]:
            e["metrics"]["test_loss"] += 10.0
            e["train_seconds"] *= 3.0
    edit_results(new, worse_and_slower)

    rows = compare.compare(run_dir, new)
    torch_row = next(r for r in rows if r.backend == "torch")
    assert (torch_row.loss_flag, torch_row.metric_flags["test_loss_sampled"], torch_row.speed_flag) == (1, 0, 1)

    same = next(r for r in compare.compare(run_dir, run_dir) if r.backend == "torch")
    assert (same.loss_flag, same.speed_flag) == (0, 0)

    md = tmp_path / "compare.md"
    assert cli.main(["compare", str(run_dir), str(new), "--markdown", str(md)]) == 0
    text = md.read_text()
    assert "▲ worse: changed" in text and "▲ slower, beyond spread" in text


def test_speed_rule_allows_for_both_runs_spread():
    base = compare.Steady(median=1.0, low=0.9, high=1.1, n=5)
    assert compare.speed_change(base, compare.Steady(1.15, 1.14, 1.16, 5)) == 1
    assert compare.speed_change(base, compare.Steady(1.15, 1.0, 1.3, 5)) == 0   # new run too noisy to tell
    assert compare.speed_change(base, compare.Steady(0.5, 0.5, 0.5, 5)) == -1
    exact = compare.Steady(1.0, 1.0, 1.0, 1)
    assert compare.speed_change(exact, compare.Steady(1.03, 1.03, 1.03, 1)) == 0  # under the 5% floor
    assert compare.speed_change(exact, None) is None


@pytest.mark.parametrize("command", ["report", "compare"])
def test_folder_without_results_is_one_line(tmp_path, run_dir, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = harness(command, str(empty), *([str(run_dir)] if command == "compare" else []))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "no results.json" in proc.stderr


def test_the_throughput_figure_draws_the_repeats_the_median_includes(run_dir, tmp_path):
    """A median taken over --repeats epochs slower than the training epochs (which crashed the figure:
    its whiskers came from the training epochs only)."""
    new = tmp_path / "run"
    shutil.copytree(run_dir, new)

    def slow_repeats(raw: dict) -> None:
        r = raw["results"][0]
        r["repeat_seconds"] = [e["train_seconds"] * 5 for e in r["epochs"]] * 2
        secs = [e["train_seconds"] for e in r["epochs"][1:]] + r["repeat_seconds"]
        r["summary"]["train_samples_per_second"] = 512 / sorted(secs)[len(secs) // 2]
    edit_results(new, slow_repeats)
    path = report.write_report([new], tmp_path / "report")
    assert (path.parent / "figures" / "throughput.png").stat().st_size > 0
