"""Interleaved rounds: time every case a little in each of several rounds, in a new order each round.

Why. Samples of one case taken back to back are not independent: a slow minute on a shared machine (another
process, a frequency change) shifts all of them, and a comparison of two cases timed minutes apart then measures
the minute, not the cases. In rounds, every case is timed once per round, the order of each round shuffled, so a
disturbance hits the cases of a round alike; the per-round ratio of two cases cancels it, and the rounds, not the
samples, are the independent units of a comparison (``reports.rounds.per_round_ratio``). asv runs its benchmarks
this way, in rounds across processes.

Design.

* ``schedule(case_ids, rounds, seed)``: the order of every round, from ``numpy.random.default_rng(seed)``; the
  seed is recorded with the rows, so a schedule can be reproduced.
* ``round_timer(settings, rounds, round_index)``: the timer settings of one case in one round. The case's timed
  budget ``rep_ms`` is shared out (``rep_ms / rounds`` per round), its repetition bounds too, with at least
  ``MIN_REPS_PER_ROUND`` samples per round so that each round has a median. The first round warms up for the
  full ``warmup_ms``; later rounds for their share (the timer's own untimed call and five estimate calls come on
  top, and re-warm the caches another case has used).
* ``AdaptiveStop``: run rounds until every pair's confidence interval of the median ratio is narrow enough,
  bounded by a time budget and a number of rounds, like ``torch.utils.benchmark``'s ``adaptive_autorange`` for one
  case.

Cost. The timed time stays ``rep_ms`` per case, but the fixed cost of a timer call (one untimed call, five
estimate calls, the warm-up) is paid once per round: about ``rounds * (6 calls + warmup_ms / rounds)`` more per
case. Either a case's workload (module, inputs, graph) is kept alive across rounds, which holds the memory of all
cases at once, or it is rebuilt every round, which costs its set-up (and, for compiled cases, a recompilation
unless cached) every round; the runner chooses. An exact 95% interval of a median needs at least 6 rounds
(``reports.rounds``), so fewer rounds give only the range of the per-round ratios.

Pure Python and NumPy; no framework is imported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "MIN_REPS_PER_ROUND", "AdaptiveStop", "adaptive_stop", "median_ci_coverage", "median_ci_ranks",
    "round_budget", "round_ratio_cis", "round_ratios", "round_timer", "schedule",
]

MIN_REPS_PER_ROUND = 3


def _check_count(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}; got {value!r}")
    return int(value)


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name}: expected a finite number {'>=' if allow_zero else '>'} 0; got {value!r}")
    return float(value)


def schedule(case_ids: Sequence[str], rounds: int, seed: int) -> list[list[str]]:
    """``rounds`` lists, each every case id once, in an order shuffled by ``numpy.random.default_rng(seed)``."""
    ids = list(case_ids)
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"case_ids: expected distinct case ids; got duplicates {dupes}")
    rounds = _check_count("rounds", rounds)
    seed = _check_count("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    return [[ids[i] for i in rng.permutation(len(ids))] for _ in range(rounds)]


def round_budget(total_ms: float, rounds: int) -> float:
    """A case's share of a budget per round: ``total_ms / rounds`` (milliseconds)."""
    return _check_positive("total_ms", total_ms, allow_zero=True) / _check_count("rounds", rounds)


def round_timer(settings: Mapping[str, Any], rounds: int, round_index: int) -> dict[str, Any]:
    """The ``harness.timer.time_fn`` settings of one case in round ``round_index`` (0-based) of ``rounds``.

    ``settings`` holds the case's whole budget (a suite's ``warmup_ms``, ``rep_ms``, ``min_reps``, ``max_reps``).
    Returns those four keys for one round: ``rep_ms / rounds``; ``min_reps`` and ``max_reps`` divided by
    ``rounds`` (rounded up), never below ``MIN_REPS_PER_ROUND``; the full ``warmup_ms`` in round 0 and
    ``warmup_ms / rounds`` afterwards.
    """
    rounds = _check_count("rounds", rounds)
    index = _check_count("round_index", round_index, minimum=0)
    if index >= rounds:
        raise ValueError(f"round_index: expected an int < rounds ({rounds}); got {round_index!r}")
    missing = [key for key in ("warmup_ms", "rep_ms", "min_reps", "max_reps") if key not in settings]
    if missing:
        raise ValueError(f"settings: expected warmup_ms, rep_ms, min_reps and max_reps; got no {', '.join(missing)}")
    warmup_ms = _check_positive("warmup_ms", settings["warmup_ms"], allow_zero=True)
    min_reps = max(MIN_REPS_PER_ROUND, math.ceil(_check_count("min_reps", settings["min_reps"]) / rounds))
    max_reps = max(min_reps, math.ceil(_check_count("max_reps", settings["max_reps"]) / rounds))
    return {
        "warmup_ms": warmup_ms if index == 0 else warmup_ms / rounds,
        "rep_ms": round_budget(settings["rep_ms"], rounds),
        "min_reps": min_reps,
        "max_reps": max_reps,
    }


def _bounds(item: Any) -> tuple[float, float, float]:
    """``(ratio, lo, hi)`` of an interval: an object with those attributes, or a 3-sequence."""
    if all(hasattr(item, name) for name in ("ratio", "lo", "hi")):
        return float(item.ratio), float(item.lo), float(item.hi)
    try:
        ratio, lo, hi = item
        return float(ratio), float(lo), float(hi)
    except (TypeError, ValueError):
        raise ValueError(f"ratio_cis: expected intervals with ratio, lo, hi or (ratio, lo, hi); got {item!r}") from None


class AdaptiveStop:
    """When to stop running rounds: once every pair's interval is narrow enough, or a budget is spent.

    Call ``done(ratio_cis, elapsed_s)`` after each round with the intervals of every pair of cases compared
    (``reports.rounds.RoundRatio`` values, or ``(ratio, lo, hi)`` tuples; a mapping's values are used) and the
    seconds spent so far. The rule, in order:

    1. ``max_rounds`` rounds done, or ``elapsed_s >= max_s``: stop (the caps win, even before ``min_rounds``);
    2. fewer than ``min_rounds`` rounds done: continue;
    3. every interval finite with ``(hi - lo) / ratio <= rel_width``: stop (no pairs: stop);
    4. otherwise continue.

    ``stop_reason`` says which rule stopped it (``"max rounds"``, ``"time budget"``, ``"converged"``). Rounds are
    counted by the calls to ``done``, unless ``rounds=`` is given.
    """

    def __init__(self, rel_width: float = 0.05, max_s: float = 60.0, min_rounds: int = 6, max_rounds: int = 30):
        self.rel_width = _check_positive("rel_width", rel_width)
        self.max_s = _check_positive("max_s", max_s)
        self.min_rounds = _check_count("min_rounds", min_rounds)
        self.max_rounds = _check_count("max_rounds", max_rounds)
        if self.max_rounds < self.min_rounds:
            raise ValueError(f"max_rounds: expected an int >= min_rounds ({min_rounds}); got {max_rounds!r}")
        self.rounds_done = 0
        self.stop_reason: str | None = None

    def widest(self, ratio_cis: Iterable[Any] | Mapping[Any, Any]) -> float:
        """The largest ``(hi - lo) / ratio`` of the intervals (inf if one is not finite; 0 with none)."""
        items = ratio_cis.values() if isinstance(ratio_cis, Mapping) else ratio_cis
        worst = 0.0
        for item in items:
            ratio, lo, hi = _bounds(item)
            width = (hi - lo) / ratio if ratio > 0 else math.inf
            worst = max(worst, width if math.isfinite(width) else math.inf)
        return worst

    def done(
        self, ratio_cis: Iterable[Any] | Mapping[Any, Any], elapsed_s: float, *, rounds: int | None = None
    ) -> bool:
        """Whether to stop after this round (see the class docstring for the rule)."""
        elapsed_s = _check_positive("elapsed_s", elapsed_s, allow_zero=True)
        self.rounds_done = self.rounds_done + 1 if rounds is None else _check_count("rounds", rounds, minimum=0)
        if self.rounds_done >= self.max_rounds:
            self.stop_reason = "max rounds"
        elif elapsed_s >= self.max_s:
            self.stop_reason = "time budget"
        elif self.rounds_done >= self.min_rounds and self.widest(ratio_cis) <= self.rel_width:
            self.stop_reason = "converged"
        else:
            self.stop_reason = None
        return self.stop_reason is not None


def adaptive_stop(settings: Any) -> AdaptiveStop:
    """The ``AdaptiveStop`` of a suite's settings (``stop = "adaptive"``): at least ``rounds`` rounds, at most
    ``max_rounds`` or ``max_seconds``, until every ratio's CI is within ``ci_width``."""
    return AdaptiveStop(rel_width=settings.ci_width, max_s=settings.max_seconds, min_rounds=settings.rounds,
                        max_rounds=settings.max_rounds)


# --------------------------------------------------------------------------------------------------------------
# Per-round ratios and the order-statistics interval of their median (``reports.rounds`` builds on these).
# --------------------------------------------------------------------------------------------------------------
def median_ci_coverage(n: int, j: int) -> float:
    """Coverage of ``[x_(j), x_(n+1-j)]`` (1-based order statistics of ``n`` values) for their median:
    ``1 - 2 P(B <= j - 1)`` with ``B ~ Binomial(n, 1/2)``."""
    if not 1 <= j <= (n + 1) // 2:
        raise ValueError(f"j: expected a rank in [1, {(n + 1) // 2}] for n={n}; got {j!r}")
    tail = sum(math.comb(n, i) for i in range(j)) / 2.0**n
    return 1.0 - 2.0 * tail


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks ``(j, n + 1 - j)`` of the narrowest order-statistics interval of a median with at least
    ``confidence`` coverage, or None when even ``[min, max]`` covers less (``n < 6`` at 95%)."""
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ValueError(f"confidence: expected a number in (0, 1); got {confidence!r}")
    if n < 1 or median_ci_coverage(n, 1) < confidence:
        return None
    j = 1
    while j + 1 <= (n + 1) // 2 and median_ci_coverage(n, j + 1) >= confidence:
        j += 1
    return j, n + 1 - j


def _medians_by_round(name: str, samples: Any, rounds: Any) -> dict[int, float]:
    a = np.asarray(samples, dtype=float)
    if a.ndim != 1 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name}_samples: expected a 1-D sequence of finite times > 0 (ms); got {samples!r}")
    r = np.asarray(rounds)
    if r.shape != a.shape or (r.size and not np.issubdtype(r.dtype, np.integer)):
        raise ValueError(f"{name}_rounds: expected one int round index per sample ({a.size}); got {rounds!r}")
    return {int(k): float(np.median(a[r == k])) for k in np.unique(r)}


def round_ratios(cand_samples: Any, cand_rounds: Any, base_samples: Any, base_rounds: Any) -> dict[int, float]:
    """``{round: median(candidate in round) / median(baseline in round)}`` for every round present in both."""
    cand = _medians_by_round("cand", cand_samples, cand_rounds)
    base = _medians_by_round("base", base_samples, base_rounds)
    return {k: cand[k] / base[k] for k in sorted(cand.keys() & base.keys())}


def _interval(ratios: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(median, lo, hi)`` of per-round ratios: the order-statistics interval, or the range with too few."""
    values = np.sort(np.asarray(ratios, dtype=float))
    ranks = median_ci_ranks(int(values.size), confidence)
    lo, hi = (values[0], values[-1]) if ranks is None else (values[ranks[0] - 1], values[ranks[1] - 1])
    return float(np.median(values)), float(lo), float(hi)


def round_ratio_cis(timed: Sequence[tuple[Mapping[str, Any], Sequence[float], Sequence[int]]]
                    ) -> list[tuple[float, float, float]]:
    """``(ratio, lo, hi)`` of every case of a group against the group's Top-k (``impl = "eager"`` first), from
    ``(case columns, samples, sample rounds)``; no Top-k or no round in common: no interval."""
    tops = [t for t in timed if t[0].get("gate") == "topk"]
    if not tops:
        return []
    base = next((t for t in tops if t[0].get("impl") == "eager"), tops[0])
    out = []
    for cols, samples, rounds in timed:
        if cols is base[0] or not samples:
            continue
        ratios = list(round_ratios(samples, rounds, base[1], base[2]).values())
        if ratios:
            out.append(_interval(ratios))
    return out
