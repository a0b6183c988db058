"""The one comparison engine: which row is compared with which, the ratio and its interval, the test, the mark.

Used by the report's timing table (``reports.tables``), by ``compare`` (``reports.compare``: a run against an
older run) and by the GPU targets (``reports.targets``). Plain Python and NumPy over row mappings (dicts or
pandas Series): it imports neither pandas nor SciPy (SciPy loads when a p-value is computed).

**Pairing** (``Pairing``): a row is compared with the row that has the same identifying columns (``keys``) but
the compared ones, which take the baseline's values (``{"gate": "topk"}`` in the tables and targets,
``{"side": "old"}`` in ``compare``). The implementation follows one rule (``baseline_impl``): the baseline's
same implementation when the baseline has that implementation anywhere in the rows (compiled against
compiled), else its ``eager`` one, else the first it has (sorted), unless the caller pins one. When several rows
share a key, the last one wins (a rerun with ``--resume`` repeats a case).

**Statistic** (``Statistic``): a function of the two sides' ``Sample`` s returning an ``Estimate`` (ratio and
confidence interval). The default, ``ratio_of_medians``, is ``median(case) / median(baseline)`` with a
percentile bootstrap interval over the raw samples. A ``Sample`` carries the row's samples, its median and the
samples' round indices when the row has them (``sample_rounds``), so a per-round statistic is one more function
of the same signature. **Test** (``Test``): a function of the two samples returning a two-sided p-value; the
default is the Mann-Whitney U test of the raw samples.

**Mark** (``mark``), the one rule:

- ``slower`` when ``ratio > factor`` and ``p < alpha``; ``faster`` when ``ratio < 1 / factor`` and ``p < alpha``;
- ``not significant`` otherwise;
- without a p-value (a side with fewer than two samples: nothing to test) the ratio alone decides, but only
  beyond an explicit ``factor > 1`` (as ``asv compare`` does); with ``factor == 1`` such a pair is ``n/a``;
- ``n/a`` without a ratio.

A later mark (e.g. "not judged (noisy)" for a pair whose rounds disagree) belongs in ``mark``, fed by a field of
the ``Estimate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stats import DEFAULT_BOOTSTRAP, bootstrap_ratio_ci, mann_whitney_p

# Marks of a comparison: the same words in the report tables, ``compare`` and the targets.
FASTER, SLOWER, SAME, UNKNOWN, BASELINE = "faster", "slower", "not significant", "n/a", "baseline"
DEFAULT_ALPHA = 0.05
DEFAULT_LEVEL = 0.95
EAGER = "eager"


# ------------------------------------------------------------------------------------------------------------
# Samples, statistics, tests.
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One side of a comparison: the raw samples (finite values, shape ``(n,)``), the row's median (used when
    there are no samples) and the round index of each sample when the row records one (``None`` otherwise)."""

    values: np.ndarray
    median: float = math.nan
    rounds: np.ndarray | None = None

    @property
    def center(self) -> float:
        return float(np.median(self.values)) if self.values.size else self.median


@dataclass(frozen=True)
class Estimate:
    """What a statistic returns: the ratio and its confidence interval (NaN when it cannot be computed)."""

    ratio: float
    ci_low: float = math.nan
    ci_high: float = math.nan


Statistic = Callable[..., Estimate]  # (case: Sample, base: Sample, *, level, n_boot, seed) -> Estimate
Test = Callable[[Sample, Sample], float]  # (case, base) -> two-sided p-value, NaN when nothing can be tested


def finite(value: Any) -> float | None:
    """``value`` as a float, ``None`` when it is missing or not a finite number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def sample_of(row: Mapping[str, Any], *, values: str = "samples_ms", median: str = "median_ms") -> Sample:
    """The ``Sample`` of a results row (its ``samples_ms``, ``median_ms`` and ``sample_rounds`` if any)."""
    raw = row.get(values)
    raw = [] if raw is None or isinstance(raw, float) else list(raw)
    rounds = row.get("sample_rounds")
    keep = [i for i, v in enumerate(raw) if finite(v) is not None]
    arr = np.asarray([float(raw[i]) for i in keep], dtype=float)
    per_round = None
    if isinstance(rounds, (list, tuple, np.ndarray)) and len(rounds) == len(raw):
        per_round = np.asarray([rounds[i] for i in keep])
    center = finite(row.get(median))
    return Sample(arr, math.nan if center is None else center, per_round)


def constant_sample(value: float) -> Sample:
    """A side that is a known constant (a bandwidth floor): two copies, so its bootstrap median is exact."""
    return Sample(np.full(2, float(value)), float(value))


def ratio_of_medians(
    case: Sample, base: Sample, *, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> Estimate:
    """``median(case) / median(base)`` and the percentile bootstrap interval of that ratio
    (``reports.stats.bootstrap_ratio_ci``: both sides resampled independently; NaN with fewer than two samples)."""
    num, den = case.center, base.center
    ratio = num / den if math.isfinite(den) and den != 0 else math.nan
    low, high = bootstrap_ratio_ci(case.values, base.values, level=level, n_boot=n_boot, seed=seed)
    return Estimate(float(ratio), low, high)


def mann_whitney(case: Sample, base: Sample) -> float:
    """Two-sided Mann-Whitney U p-value of the raw samples (``reports.stats.mann_whitney_p``)."""
    return mann_whitney_p(case.values, base.values)


# ------------------------------------------------------------------------------------------------------------
# The mark.
# ------------------------------------------------------------------------------------------------------------
def mark(ratio: float, p_value: float, *, alpha: float = DEFAULT_ALPHA, factor: float = 1.0) -> str:
    """The one mark rule (see the module docstring): ``slower`` / ``faster`` beyond ``factor`` with
    ``p < alpha``; ``not significant`` otherwise; without a p-value the ratio decides beyond a ``factor > 1``
    and the pair is ``n/a`` with ``factor == 1``; ``n/a`` without a ratio."""
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 1.0):
        raise ValueError(f"factor: expected a ratio >= 1 (e.g. 1.1 for 10%); got {factor!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a significance level in (0, 1); got {alpha!r}")
    if not math.isfinite(ratio):
        return UNKNOWN
    if math.isfinite(p_value):
        significant = p_value < alpha
    elif factor > 1.0:
        significant = True  # nothing to test: the ratio beyond the factor decides
    else:
        return UNKNOWN
    if significant and ratio > factor:
        return SLOWER
    if significant and ratio < 1.0 / factor:
        return FASTER
    return SAME


@dataclass(frozen=True)
class Judged:
    """A compared pair: the estimate, the p-value (NaN when untested) and the mark."""

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    mark: str

    @property
    def tested(self) -> bool:
        return math.isfinite(self.p_value)


def judge(
    case: Sample,
    base: Sample,
    *,
    alpha: float = DEFAULT_ALPHA,
    factor: float = 1.0,
    statistic: Statistic = ratio_of_medians,
    test: Test = mann_whitney,
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Judged:
    """Estimate, test and mark ``case`` against ``base``."""
    est = statistic(case, base, level=level, n_boot=n_boot, seed=seed)
    p = test(case, base)
    return Judged(est.ratio, est.ci_low, est.ci_high, p, mark(est.ratio, p, alpha=alpha, factor=factor))


# ------------------------------------------------------------------------------------------------------------
# Pairing.
# ------------------------------------------------------------------------------------------------------------
def baseline_impl(impl: Any, available: Collection[Any], pinned: Any = None) -> Any:
    """The baseline's implementation for a case of implementation ``impl``: ``pinned`` when given, else ``impl``
    when the baseline has it, else ``eager``, else the first the baseline has (sorted); ``None`` without any."""
    if pinned is not None:
        return pinned
    if impl in available:
        return impl
    if EAGER in available:
        return EAGER
    return min(available, key=str) if available else None


class Pairing:
    """Rows looked up by their identifying columns, and each row's baseline (see the module docstring).

    ``keys``: the identifying columns (the compared ones and ``impl_key`` included); ``baseline``: the compared
    columns and the baseline's values; ``impl_key``: the implementation column (``None``: no implementation
    rule); ``pinned_impl``: the baseline's implementation when it is fixed.
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        keys: Sequence[str],
        baseline: Mapping[str, Any],
        *,
        impl_key: str | None = "impl",
        pinned_impl: Any = None,
    ):
        unknown = [k for k in baseline if k not in keys]
        if unknown:
            raise ValueError(f"baseline: expected columns among the keys {list(keys)}; got {unknown}")
        self.keys, self.baseline = tuple(keys), dict(baseline)
        self.impl_key, self.pinned_impl = impl_key, pinned_impl
        self.rows: dict[tuple, Mapping[str, Any]] = {}
        for row in rows:
            self.rows[self.key(row)] = row  # the last row of a key wins
        self.available = {
            r.get(impl_key) for r in self.rows.values() if impl_key and self.is_baseline_side(r)
        }

    def key(self, row: Mapping[str, Any], **over: Any) -> tuple:
        return tuple(over[k] if k in over else row.get(k) for k in self.keys)

    def is_baseline_side(self, row: Mapping[str, Any]) -> bool:
        return all(row.get(k) == v for k, v in self.baseline.items())

    def get(self, row: Mapping[str, Any], **over: Any) -> Mapping[str, Any] | None:
        return self.rows.get(self.key(row, **over))

    def wanted(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The identifying values of ``row``'s baseline."""
        want = dict(zip(self.keys, self.key(row, **self.baseline), strict=True))
        if self.impl_key:
            want[self.impl_key] = baseline_impl(row.get(self.impl_key), self.available, self.pinned_impl)
        return want

    def baseline_of(self, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """``row``'s baseline row, ``None`` when it is missing."""
        return self.rows.get(tuple(self.wanted(row).values()))

    def is_own_baseline(self, row: Mapping[str, Any]) -> bool:
        return self.baseline_of(row) is row


__all__ = [
    "BASELINE",
    "DEFAULT_ALPHA",
    "FASTER",
    "SAME",
    "SLOWER",
    "UNKNOWN",
    "Estimate",
    "Judged",
    "Pairing",
    "Sample",
    "Statistic",
    "Test",
    "baseline_impl",
    "constant_sample",
    "finite",
    "judge",
    "mann_whitney",
    "mark",
    "ratio_of_medians",
    "sample_of",
]
