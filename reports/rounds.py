"""Per-round statistics of timings: ratios whose intervals hold on a noisy machine, noise flags, verdicts.

Samples of one case taken in one run are not independent (a slow minute shifts them all), so a test over samples
(Mann-Whitney, a bootstrap over samples) calls pure noise significant. When cases are timed in interleaved rounds
(``harness.rounds``), each round is one independent observation of a pair: its ratio is the candidate's median
sample in the round over the baseline's median in the same round, which cancels what the round did to both.

* ``per_round_ratio``: the median of the per-round ratios, with a distribution-free interval for that median from
  order statistics (``median_ci_ranks``: with ``n`` ratios sorted, ``[x_(j), x_(n+1-j)]`` covers the true median
  with probability ``1 - 2 P(B <= j - 1)``, ``B ~ Binomial(n, 1/2)``; the largest ``j`` whose coverage reaches the
  confidence is used). With too few rounds for the confidence (``n < 6`` at 95%) the interval is the range of the
  ratios and ``method`` says so.
* ``pooled_ratio``: the fallback for rows without round indices: ratio of medians with a bootstrap interval over
  samples (as ``reports.stats``; too narrow on a noisy machine, and ``method`` says which it is).
* ``noise_flags``, ``inconsistent_pairs``: rows that should not be judged.
* ``verdict``: the rule that turns an interval into ``faster`` / ``slower`` / ``same``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.rounds import median_ci_coverage, median_ci_ranks, round_ratios

from .stats import DEFAULT_BOOTSTRAP, bootstrap_ratio_ci

__all__ = [
    "NOISY_IQR",
    "RoundRatio",
    "inconsistent_pairs",
    "median_ci_coverage",
    "median_ci_ranks",
    "noise_flags",
    "noise_reasons",
    "per_round_ratio",
    "pooled_ratio",
    "round_ratios",
    "verdict",
]

# A row whose IQR exceeds this fraction of its median is noisy (torch.utils.benchmark warns at 10%).
NOISY_IQR = 0.10
FLAG_NOISY, FLAG_INCONSISTENT = "noisy", "inconsistent"
METHOD_ROUNDS = "order statistics of per-round ratios"
METHOD_RANGE = "range (too few rounds)"
METHOD_POOLED = "pooled samples (no rounds)"
METHOD_NONE = "no common rounds"
FASTER, SLOWER, SAME = "faster", "slower", "same"
NOT_JUDGED_NOISY, NOT_JUDGED_NO_CI = "not judged (noisy)", "not judged (no interval)"
# Columns of a timing row that identify a case apart from its mode (pairs of fwd and fwdbwd rows).
_PAIR_KEYS = ("gate", "framework", "device", "impl", "gating", "batch", "input_dim", "experts", "k", "dtype")


@dataclass(frozen=True)
class RoundRatio:
    """``ratio`` (candidate / baseline) with the interval ``[lo, hi]``, from ``n_rounds`` rounds by ``method``."""

    ratio: float
    lo: float
    hi: float
    n_rounds: int
    method: str


def _check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence: expected a level in (0, 1); got {confidence!r}")
    return float(confidence)


def _times(name: str, values: Any) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name}: expected a 1-D sequence of finite times > 0 (ms); got {values!r}")
    return a


# --------------------------------------------------------------------------------------------------------------
# Ratios.
# --------------------------------------------------------------------------------------------------------------
def per_round_ratio(
    cand_samples: Sequence[float],
    cand_rounds: Sequence[int] | None,
    base_samples: Sequence[float],
    base_rounds: Sequence[int] | None,
    *,
    confidence: float = 0.95,
    seed: int = 0,
) -> RoundRatio:
    """The median of the per-round ratios (``round_ratios``) with an exact order-statistics interval.

    Rounds are the independent units: ``n_rounds`` counts the rounds present on both sides. With too few rounds
    for ``confidence`` the interval is ``[min, max]`` of the ratios (method ``"range (too few rounds)"``); with
    none in common all three values are NaN. When either side has no round indices (None), this is
    ``pooled_ratio`` (bootstrap with ``seed``).
    """
    confidence = _check_confidence(confidence)
    if cand_rounds is None or base_rounds is None:
        return pooled_ratio(cand_samples, base_samples, confidence=confidence, seed=seed)
    ratios = np.sort(np.fromiter(round_ratios(cand_samples, cand_rounds, base_samples, base_rounds).values(), float))
    n = int(ratios.size)
    if n == 0:
        return RoundRatio(math.nan, math.nan, math.nan, 0, METHOD_NONE)
    estimate = float(np.median(ratios))
    ranks = median_ci_ranks(n, confidence)
    if ranks is None:
        return RoundRatio(estimate, float(ratios[0]), float(ratios[-1]), n, METHOD_RANGE)
    j, k = ranks
    return RoundRatio(estimate, float(ratios[j - 1]), float(ratios[k - 1]), n, METHOD_ROUNDS)


def pooled_ratio(
    cand_samples: Sequence[float],
    base_samples: Sequence[float],
    *,
    confidence: float = 0.95,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> RoundRatio:
    """``median(candidate) / median(baseline)`` over all samples, with a percentile bootstrap interval over
    samples (``reports.stats.bootstrap_ratio_ci``; NaN with fewer than two samples a side). ``n_rounds`` is 0."""
    cand, base = _times("cand_samples", cand_samples), _times("base_samples", base_samples)
    if cand.size == 0 or base.size == 0:
        return RoundRatio(math.nan, math.nan, math.nan, 0, METHOD_POOLED)
    lo, hi = bootstrap_ratio_ci(cand, base, level=_check_confidence(confidence), n_boot=n_boot, seed=seed)
    return RoundRatio(float(np.median(cand) / np.median(base)), lo, hi, 0, METHOD_POOLED)


# --------------------------------------------------------------------------------------------------------------
# Flags and verdicts.
# --------------------------------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if math.isfinite(value) else None


def noise_reasons(row: Mapping[str, Any], *, spread: bool = True) -> list[str]:
    """Why a timing row is noisy, in words (empty when it is not): IQR over ``NOISY_IQR`` of the median (unless
    ``spread`` is False: a comparison whose interval is made across worker processes has that spread in its
    interval already), or a recorded load (max of ``load_before``, ``load_after``) over ``usable_cores``. Missing
    columns count as fine."""
    reasons = []
    median, iqr = _number(row.get("median_ms")), _number(row.get("iqr_ms"))
    if spread and median and median > 0 and iqr is not None and iqr / median > NOISY_IQR:
        reasons.append(f"IQR {iqr / median:.0%} of the median (over {NOISY_IQR:.0%})")
    loads = [v for v in (_number(row.get("load_before")), _number(row.get("load_after"))) if v is not None]
    cores = _number(row.get("usable_cores"))
    if loads and cores is not None and max(loads) > cores:
        reasons.append(f"load {max(loads):.2f} over {cores:g} usable cores")
    return reasons


def noise_flags(row: Mapping[str, Any], *, spread: bool = True) -> list[str]:
    """``["noisy"]`` when ``noise_reasons(row, spread=spread)`` has any reason, else ``[]``."""
    return [FLAG_NOISY] if noise_reasons(row, spread=spread) else []


def inconsistent_pairs(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Case ids of ``fwd`` and ``fwdbwd`` rows of the same case (same gate, framework, device, impl, gating,
    shape, dtype) where the forward alone is slower than forward and backward: a measurement that cannot be
    right (flag ``"inconsistent"``). Both rows' ids are returned; rows not ``ok`` or without a median are ignored.
    """
    by_case: dict[tuple[Any, ...], dict[str, list[tuple[str, float]]]] = {}
    for row in rows:
        median = _number(row.get("median_ms"))
        if row.get("status", "ok") != "ok" or median is None or row.get("mode") not in ("fwd", "fwdbwd"):
            continue
        key = tuple(row.get(k) for k in _PAIR_KEYS)
        by_case.setdefault(key, {"fwd": [], "fwdbwd": []})[row["mode"]].append((str(row.get("case_id")), median))
    out: set[str] = set()
    for modes in by_case.values():
        for fwd_id, fwd_ms in modes["fwd"]:
            for both_id, both_ms in modes["fwdbwd"]:
                if fwd_ms > both_ms:
                    out.update((fwd_id, both_id))
    return out


def verdict(ratio: RoundRatio, factor: float, flags: Iterable[str] = ()) -> str:
    """The verdict on ``ratio`` (candidate / baseline) for a change ``factor`` (>= 1). The rule, in order:

    1. any flag (``"noisy"``, ``"inconsistent"``): ``"not judged (noisy)"``;
    2. no finite ratio and interval: ``"not judged (no interval)"``;
    3. ``"slower"`` when the interval lies above 1 (``lo > 1``) and the ratio is beyond the factor
       (``ratio > factor``); ``"faster"`` when ``hi < 1`` and ``ratio < 1 / factor``;
    4. ``"same"`` otherwise: the interval straddles 1 (no evidence of a change), or the change is within the
       factor; an interval inside ``[1 / factor, factor]`` is always ``"same"``.

    This is ``asv compare``'s rule (significant and beyond the factor) with the interval as the test.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1.0:
        raise ValueError(f"factor: expected a ratio >= 1; got {factor!r}")
    if any(True for _ in flags):
        return NOT_JUDGED_NOISY
    if not all(math.isfinite(v) for v in (ratio.ratio, ratio.lo, ratio.hi)):
        return NOT_JUDGED_NO_CI
    if ratio.lo > 1.0 and ratio.ratio > factor:
        return SLOWER
    if ratio.hi < 1.0 and ratio.ratio < 1.0 / factor:
        return FASTER
    return SAME
