"""Statistics of a sweep over seeds: per-group estimates and each backend's difference from the fastest.

A group is one backend on one device at one latent size; its samples are the seeds. For each group the
summary gives n, mean, sample standard deviation and the 95 % Student-t confidence interval of each of the
workload's final test metrics and of the training samples per second: the steady figure
(median of the epochs after the first), or the first epoch's for 1-epoch jobs, as `throughput_basis` says.

Comparisons are made within one device and latent size, against the fastest backend there (the highest
geometric-mean samples/s):
- speed: the ratio fastest / backend of geometric-mean throughputs, with a Welch t-interval computed on
  log(samples/s) and exponentiated. Timing runs of two backends are independent measurements (a seed
  does not pair them) with unequal spreads, and a ratio is symmetric on the log scale.
- loss: the mean per-seed difference backend - fastest, with a paired t-interval over the seeds both
  ran. A seed fixes the initial weights, data order and noise of every backend, so the pairs share
  everything except the framework and the differences isolate it.
A difference is "significant" when its 95 % interval excludes 0 (loss) or 1 (speed ratio). Groups with
fewer than two seeds get no interval (None). All computations are pandas, NumPy and scipy.stats.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
GROUP = ("backend", "device", "latent_dim")
THROUGHPUT = "samples_per_second"


def describe(values: Iterable[float], confidence: float = CONFIDENCE) -> dict[str, float | int | None]:
    """n, mean, sample std (ddof=1) and the Student-t interval of the mean of `values`."""
    x = pd.Series(list(values), dtype=float).dropna()
    n = int(x.size)
    out: dict[str, float | int | None] = {"n": n, "mean": _num(x.mean()) if n else None,
                                         "std": None, "ci_low": None, "ci_high": None}
    if n >= 2:
        std = float(x.std(ddof=1))
        low, high = stats.t.interval(confidence, df=n - 1, loc=float(x.mean()), scale=float(stats.sem(x)))
        # zero spread (identical values) makes scale 0 and the interval a point, which scipy returns as NaN
        out.update(std=std, ci_low=_num(low, x.mean()), ci_high=_num(high, x.mean()))
    return out


def speed_ratio(fast: Iterable[float], slow: Iterable[float],
                confidence: float = CONFIDENCE) -> tuple[float | None, float | None, float | None]:
    """(ratio, low, high): how many times faster `fast` is than `slow`, Welch interval on log throughput."""
    a, b = np.log(np.asarray(list(fast), float)), np.log(np.asarray(list(slow), float))
    if not (a.size and b.size):
        return None, None, None
    ratio = float(np.exp(a.mean() - b.mean()))
    if a.size < 2 or b.size < 2:
        return ratio, None, None
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    return ratio, _num(np.exp(ci.low), ratio), _num(np.exp(ci.high), ratio)


def paired_difference(values: pd.Series, reference: pd.Series,
                      confidence: float = CONFIDENCE) -> tuple[float | None, float | None, float | None]:
    """(mean difference, low, high) of `values - reference` over the seeds (index) both have; paired t."""
    both = pd.concat({"v": values, "r": reference}, axis=1).dropna()
    if both.empty:
        return None, None, None
    diff = float((both["v"] - both["r"]).mean())
    if len(both) < 2:
        return diff, None, None
    ci = stats.ttest_rel(both["v"].to_numpy(), both["r"].to_numpy()).confidence_interval(confidence)
    return diff, _num(ci.low, diff), _num(ci.high, diff)


def summarize(rows: list[dict[str, Any]], metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """The `summary` list of sweep.json from finished jobs' rows.

    Each row: backend, device, latent_dim, seed, samples_per_second and one column per name in `metrics`
    (the workload's final test metrics and the steady throughput of one job with status ok). Every
    metric gets `<name>_mean`, `_std`, `_ci_low`, `_ci_high` and its paired difference from the fastest.
    """
    if not rows:
        return []
    df = pd.DataFrame(rows)
    out = []
    for key, group in df.groupby(list(GROUP), sort=True):
        entry: dict[str, Any] = dict(zip(GROUP, key))
        entry["n"] = int(len(group))
        entry["seeds"] = sorted(int(s) for s in group["seed"])
        if "throughput_basis" in group:  # which throughput the samples/s figures are: steady or first epoch
            entry["throughput_basis"] = "/".join(sorted(set(group["throughput_basis"].dropna().astype(str))))
        for column in (*metrics, THROUGHPUT):
            d = describe(group[column])
            entry.update({f"{column}_{k}": v for k, v in d.items() if k != "n"})
        out.append(entry)
    for entry in out:
        entry.update(_versus_fastest(df, entry, metrics))
    return out


def _versus_fastest(df: pd.DataFrame, entry: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, Any]:
    """The comparison fields of one group against the fastest backend on its device and latent size."""
    peers = df[(df["device"] == entry["device"]) & (df["latent_dim"] == entry["latent_dim"])]
    speed = peers.groupby("backend")["samples_per_second"].apply(lambda s: float(np.log(s).mean()))
    fastest = str(speed.idxmax())
    mine = peers[peers["backend"] == entry["backend"]].set_index("seed")
    best = peers[peers["backend"] == fastest].set_index("seed")
    ratio, low, high = speed_ratio(best["samples_per_second"], mine["samples_per_second"])
    out: dict[str, Any] = {"fastest": fastest, "speedup_of_fastest": ratio,
                           "speedup_ci_low": low, "speedup_ci_high": high,
                           "speedup_significant": _excludes(low, high, 1.0)}
    for loss in metrics:
        diff, low, high = paired_difference(mine[loss], best[loss])
        out.update({f"{loss}_diff": diff, f"{loss}_diff_ci_low": low, f"{loss}_diff_ci_high": high,
                    f"{loss}_diff_significant": _excludes(low, high, 0.0)})
    return out


def _excludes(low: float | None, high: float | None, value: float) -> bool | None:
    if low is None or high is None:
        return None
    return bool(low > value or high < value)


def _num(x: float, point: float | None = None) -> float | None:
    """A JSON-safe float: NaN becomes `point` (a zero-width interval) when given, else None."""
    x = float(x)
    if math.isfinite(x):
        return x
    return None if point is None or not math.isfinite(float(point)) else float(point)
