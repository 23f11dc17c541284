"""`harness parity --out DIR`: the lockstep result as a committed artifact, parity.json and parity.md.

Why a file: docs/correctness.md quotes the parity counts (worst step per backend, mutants' counts) and
every quoted number must point to the artifact that produced it. parity.json keeps everything the
console table shows, plus each step's outlier count, the tolerances in force, the run's config and the
environment (harness.measurement.measure), so a later reader can tell which code and machine gave the numbers.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness import atomic
from harness.config import RunConfig
from harness.measurement import measure

FORMAT = 1  # bump when a key changes meaning


def to_dict(reports: list, config: RunConfig, steps: int, command: list[str],
            frameworks: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything one parity invocation measured, JSON-ready (floats as floats, no formatting)."""
    from harness.verification import parity
    return {
        "format": FORMAT,
        "kind": "lockstep parity vs the float64 NumPy reference (harness/verification/parity.py)",
        "command": ["python", "-m", "harness", *command],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": steps,
        "seed": config.seed,
        "tolerances": {"STEP_RTOL": parity.STEP_RTOL, "KINK_BUDGET": parity.KINK_BUDGET,
                       "LOSS_RTOL": parity.LOSS_RTOL, "KINK_STEP_RATE": parity.KINK_STEP_RATE,
                       "allowed_kink_steps": parity.allowed_kink_steps(steps)},
        "config": config.to_dict(),
        "environment": measure.environment(),
        "frameworks": frameworks or {},  # measure.framework_info after the run: versions, threads, precision
        "passed": all(r.ok for r in reports),
        "failed": [{"backend": r.backend, "error": r.error} for r in reports if r.error],  # no result at all
        "backends": [{
            "backend": r.backend,
            "ok": r.ok,
            "worst_rel_err": r.worst,                  # per tensor: max over steps of |cand - ref| / max|ref|
            "outliers_per_step": r.outliers,           # entries beyond STEP_RTOL, one count per step
            "worst_step_outliers": max(r.outliers, default=0),
            "worst_step": _worst_step(r.outliers),      # 1-based; None when no step has an outlier
            "kink_steps": parity.kink_steps(r.outliers),  # steps beyond KINK_BUDGET
            "max_loss_rel_err": r.max_loss_rel_err,
            "free_running_rel_err": r.free_running,    # per tensor, after all steps without teacher forcing
        } for r in reports if not r.error],
    }


def _worst_step(outliers: list[int]) -> int | None:
    if not outliers or max(outliers) == 0:
        return None
    return 1 + outliers.index(max(outliers))


def markdown(doc: dict[str, Any]) -> str:
    """The console table as Markdown, with the command, tolerances and environment it came from."""
    tol, rows = doc["tolerances"], doc["backends"]
    env = doc["environment"]
    head = "| parameter | " + " | ".join(r["backend"] for r in rows) + " |"
    failed = doc.get("failed", [])
    verdict = "all backends agree" if doc["passed"] else "disagree: " + ", ".join(
        [r["backend"] for r in rows if not r["ok"]] + [f"{f['backend']} (no result: {f['error']})" for f in failed])
    lines = [
        f"# Lockstep parity: {doc['steps']} teacher-forced steps, seed {doc['seed']}", "",
        f"Command: `{' '.join(doc['command'])}`", "",
        f"Verdict: **{verdict}** "
        f"with the float64 reference. Per entry and step, an entry is an outlier when "
        f"|cand - ref| > {tol['STEP_RTOL']:g} x max|ref| of its tensor; a backend passes when at most "
        f"{tol.get('allowed_kink_steps', 0)} step(s) have more than {tol['KINK_BUDGET']} outliers (kink steps) and "
        f"every per-step loss is within {tol['LOSS_RTOL']:g} (relative). Rules and reasons: harness/verification/parity.py, docs/correctness.md.", "",
        head, "|---|" + "---:|" * len(rows),
    ]
    for name in rows[0]["worst_rel_err"]:
        lines.append(f"| {name} | " + " | ".join(f"{r['worst_rel_err'][name]:.1e}" for r in rows) + " |")
    lines += [
        "| outliers in the worst step (step) | " + " | ".join(
            f"{r['worst_step_outliers']}" + (f" (step {r['worst_step']})" if r["worst_step"] else "")
            for r in rows) + " |",
        "| steps with any outlier | " + " | ".join(
            f"{sum(1 for n in r['outliers_per_step'] if n)} of {len(r['outliers_per_step'])}" for r in rows) + " |",
        "| per-step loss rel. error, max | " + " | ".join(f"{r['max_loss_rel_err']:.1e}" for r in rows) + " |",
        "| free-running rel. error after all steps (info) | " + " | ".join(
            f"{max(r['free_running_rel_err'].values()):.1e}" if r["free_running_rel_err"] else "-"
            for r in rows) + " |",
        "| verdict | " + " | ".join("ok" if r["ok"] else "FAIL" for r in rows) + " |",
        "",
        "Parameter rows: the largest |cand - ref| / max|ref| of the tensor over all steps. Per-step "
        "outlier counts are in parity.json (`outliers_per_step`).", "",
        "## Environment", "",
        f"- cpu: {env['cpu']} ({env['cores']} cores; {' '.join(env['cpu_flags'])})",
        f"- gpus: {', '.join(g.get('name', '?') for g in env['gpus']) or 'none'}",
        f"- device: {doc['config']['device']}, threads: {doc['config']['threads']}, "
        f"precision: {doc['config']['precision']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v),
        f"- git: {env['git']['commit']}{' (dirty)' if env['git']['dirty'] else ''}",
        f"- created: {doc['created']}", "",
    ]
    return "\n".join(lines)


def write(out: Path, doc: dict[str, Any]) -> None:
    """DIR/parity.json and DIR/parity.md, each written atomically."""
    atomic.write_json(out / "parity.json", doc)
    atomic.write_text(out / "parity.md", markdown(doc))


def load(out: Path) -> dict[str, Any]:
    return json.loads((Path(out) / "parity.json").read_text())
