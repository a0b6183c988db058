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

__all__ = ["MIN_REPS_PER_ROUND", "AdaptiveStop", "round_budget", "round_timer", "schedule"]

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
