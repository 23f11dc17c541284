"""How `harness calibrate` turns runs over seeds into a profile's targets: the statistics, their
false-alarm budget and their coverage, in one place.

`check` judges three families of statistics at every epoch of a profile (harness.verification.check):

- bands: each backend's value of each metric (train loss and the workload's test metrics) against a
  normal tolerance interval of the calibration runs at that epoch: mean +- k x sd, k from Howe's
  method for n = the number of calibration seeds (the independent unit: backends of one seed are
  nearly one draw), two-sided coverage 1 - alpha per band, confidence CONFIDENCE;
- gap: every same-seed difference between two calibrated backends in the primary metric, against
  z x sd, where sd is the root mean square of the calibration runs' pair differences;
- window: the mean of those pair differences over the last WINDOW epochs (a trajectory statistic: a
  small shift that persists is caught even where each epoch alone is within its gap tolerance).

One check of a run must raise a false alarm at most FALSE_ALARM of the time. That budget is split
among the families (FAMILY_SHARE) and, within a family, equally among its tests (Bonferroni: epochs x
metrics for bands, epochs x pairs for gaps, windows x pairs for windows), so each test's alpha is
stated beside its value. Spreads are pooled over the epochs within NEIGHBOURS of the judged one (so
tolerances move smoothly from epoch to epoch) and raised to their one-sided CONFIDENCE upper bound
(chi-square) before the quantile is taken, so few seeds give wide tolerances, never tight ones.
Assumptions, stated in every derivation: normal seed-to-seed spread of each metric, normal pair
differences centred on zero (a systematic offset between backends counts as spread).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from harness.errors import HarnessError
from harness.verification.agreement import experiment, mismatch
from harness.verification.targets import Band, EpochTargets, Profile

FALSE_ALARM = 0.01
FAMILY_SHARE = {"bands": 0.4, "gap": 0.3, "window": 0.3}
CONFIDENCE = 0.95
WINDOW = 10
NEIGHBOURS = 2
RULES = (f"per check of a run at most {FALSE_ALARM:.0%} false alarms (bands {FAMILY_SHARE['bands']:.0%}, "
         f"gaps {FAMILY_SHARE['gap']:.0%}, {WINDOW}-epoch windows {FAMILY_SHARE['window']:.0%} of it, "
         "Bonferroni within each); spreads pooled over epochs +-"
         f"{NEIGHBOURS} and raised to their {CONFIDENCE:.0%} upper bound; bands: normal tolerance intervals "
         "(Howe, n = seeds); gaps and windows: z x sd of same-seed pair differences")


@dataclass(frozen=True)
class Tolerance:
    """One derived limit and how it was derived."""

    value: float
    derivation: str


def howe_k(n: int, coverage: float, confidence: float = CONFIDENCE) -> float:
    """Two-sided normal tolerance factor: mean +- k sd covers `coverage` of the population with
    `confidence`, from n draws (Howe 1969, the approximation NIST's handbook gives)."""
    nu = n - 1
    z = stats.norm.isf((1 - coverage) / 2)
    return z * math.sqrt(nu * (1 + 1 / n) / stats.chi2.ppf(1 - confidence, nu))


def sd_upper(sd: float, df: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper confidence bound of a standard deviation estimated with `df` degrees of freedom."""
    return sd * math.sqrt(df / stats.chi2.ppf(1 - confidence, df))


def neighbourhood(epoch: int, first: int, last: int) -> range:
    """The epochs whose spreads are pooled for `epoch` (clipped to [first, last])."""
    return range(max(first, epoch - NEIGHBOURS), min(last, epoch + NEIGHBOURS) + 1)


def band(values: dict[int, list[float]], epoch: int, seeds: int, tests: int) -> tuple[float, float, str]:
    """(low, high, derivation) of one metric at `epoch`; `values` holds every calibration run's value
    per epoch; `tests` is the number of bands one check judges (the Bonferroni divisor)."""
    near = neighbourhood(epoch, min(values), max(values))
    sd = math.sqrt(np.mean([np.var(values[e], ddof=1) for e in near]))
    alpha = FALSE_ALARM * FAMILY_SHARE["bands"] / tests
    k = howe_k(seeds, 1 - alpha)
    mean = float(np.mean(values[epoch]))
    return (round(mean - k * sd, 3), round(mean + k * sd, 3),
            f"{len(values[epoch])} runs of {seeds} seeds: mean {mean:.3f}, sd {sd:.3f} (pooled over epochs "
            f"{near.start}-{near.stop - 1}); band = mean +- {k:.2f} sd, a tolerance interval covering "
            f"1 - {alpha:.1e} of runs with {CONFIDENCE:.0%} confidence (Howe, n = {seeds}; {tests} bands per check)")


def pair_differences(losses: dict[int, dict[str, dict[int, float]]], backends: tuple[str, ...]
                     ) -> dict[int, list[float]]:
    """Per epoch, every seed's difference a - b in the primary metric for each pair of `backends`."""
    out: dict[int, list[float]] = {}
    for per_backend in losses.values():
        for a, b in itertools.combinations(backends, 2):
            for epoch, value in per_backend[a].items():
                out.setdefault(epoch, []).append(value - per_backend[b][epoch])
    return out


def window_means(diffs_by_seed_pair: dict[tuple, dict[int, float]], width: int) -> dict[int, list[float]]:
    """Per last epoch e >= width, the mean of each (seed, pair) difference over epochs e-width+1..e."""
    out: dict[int, list[float]] = {}
    for per_epoch in diffs_by_seed_pair.values():
        for end in range(width, max(per_epoch) + 1):
            out.setdefault(end, []).append(float(np.mean([per_epoch[e] for e in range(end - width + 1, end + 1)])))
    return out


def spread_limit(samples: dict[int, list[float]], epoch: int, df_per_epoch: int, pooled_epochs_independent: bool,
                 alpha: float, what: str) -> Tolerance:
    """z x (upper bound of the RMS of `samples` pooled around `epoch`): a two-sided limit with false-alarm
    `alpha` per judged value, for zero-centred normal differences."""
    near = neighbourhood(epoch, min(samples), max(samples))
    squares = [v * v for e in near for v in samples[e]]
    rms = math.sqrt(np.mean(squares))
    df = df_per_epoch * (len(near) if pooled_epochs_independent else 1)
    upper = sd_upper(rms, df)
    z = stats.norm.isf(alpha / 2)
    return Tolerance(round(z * upper, 3),
                     f"{what}: rms {rms:.3f} over {len(squares)} values (epochs {near.start}-{near.stop - 1}), "
                     f"{CONFIDENCE:.0%} upper bound {upper:.3f} (df {df}); limit = {z:.2f} x that, "
                     f"false alarm {alpha:.1e} per value")


def seeds_of(records: list[tuple[str, Any]]) -> dict[int, dict[str, Any]]:
    """{seed: {backend: result}} of calibration runs, one experiment; runs of one seed with disjoint
    backends are joined (a seed's backends may be trained as several runs, on several cores), and a
    run of several seeds (an ensemble) gives each of its seeds."""
    exp = experiment(records[0][1].config)
    joined: dict[int, dict[str, Any]] = {}
    for folder, rec in records:
        if (why := mismatch(exp, experiment(rec.config))) is not None:
            raise HarnessError(f"calibration runs are not one experiment: {folder}: {why}")
        for r in rec.results:
            if r.backend in joined.setdefault(r.seed, {}):
                raise HarnessError(f"calibration run {folder} repeats {r.backend} for seed {r.seed}")
            joined[r.seed][r.backend] = r
    return joined


def calibrated_profile(profile: Profile, records: list[tuple[str, Any]]) -> Profile:
    """A profile whose every epoch's targets come from `records`: (run folder, RunRecord).

    The records must be one experiment and hold, for each of at least 3 seeds, every profile backend
    with at least `profile.epochs` finished epochs (in one run or several); anything else is an error
    and nothing is written.
    """
    if not records:
        raise HarnessError("calibration needs at least one run")
    exp = experiment(records[0][1].config)
    joined = seeds_of(records)
    if len(joined) < 3:
        raise HarnessError(f"calibration needs runs of at least 3 seeds, got {len(joined)}")
    last, backends = profile.epochs, profile.backends
    metrics = (*records[0][1].config.model.spec().metric_names, "train_loss")
    values = {m: {e: [] for e in range(1, last + 1)} for m in metrics}
    losses: dict[int, dict[str, dict[int, float]]] = {}
    for seed, by_backend in sorted(joined.items()):
        missing = [b for b in backends if b not in by_backend or by_backend[b].status != "ok"
                   or len(by_backend[b].epochs) < last]
        if missing:
            raise HarnessError(f"calibration runs of seed {seed} lack {last} ok epoch(s) of: {', '.join(missing)}")
        losses[seed] = {b: {e.epoch: e.primary for e in by_backend[b].epochs[:last]} for b in backends}
        for b in backends:
            for e in by_backend[b].epochs[:last]:
                for m in metrics:
                    values[m][e.epoch].append(e.value(m))
    n, pairs = len(joined), len(backends) * (len(backends) - 1) // 2
    width = WINDOW if last >= WINDOW else 0
    gap_share = FAMILY_SHARE["gap"] + (0 if width else FAMILY_SHARE["window"])
    diffs = pair_differences(losses, backends)
    by_seed_pair = {(s, a, b): {e: losses[s][a][e] - losses[s][b][e] for e in losses[s][a]}
                    for s in losses for a, b in itertools.combinations(backends, 2)}
    windows = window_means(by_seed_pair, width) if width else {}
    df = (len(backends) - 1) * n
    per_epoch = {}
    for epoch in range(1, last + 1):
        gap = spread_limit(diffs, epoch, df, True, FALSE_ALARM * gap_share / (last * pairs),
                           f"same-seed pair differences of {len(backends)} backends x {n} seeds")
        window = (spread_limit(windows, epoch, df, False,
                               FALSE_ALARM * FAMILY_SHARE["window"] / ((last - width + 1) * pairs),
                               f"{width}-epoch means of those differences") if epoch >= width and width else None)
        bands = {m: Band(*band(values[m], epoch, n, last * len(metrics))) for m in metrics}
        per_epoch[epoch] = EpochTargets(epoch, bands, gap.value, gap.derivation,
                                        window.value if window else None, window.derivation if window else "")
    calibration = {"seeds": sorted(joined), "runs": [str(f) for f, _ in records], "rules": RULES,
                   "false_alarm": FALSE_ALARM, "window_epochs": width}
    return Profile(profile.name, profile.epochs, backends, profile.seed, exp, calibration, per_epoch)
