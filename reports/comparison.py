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

Two more statistics work on rounds (``reports.rounds``): ``per_round`` for two cases timed in the same
interleaved rounds of one run (the median of the per-round ratios, an order-statistics interval across rounds),
and ``round_medians`` for two runs, whose rounds do not pair (the ratio of the sides' medians of per-round
medians, a bootstrap interval resampling rounds on each side). Each falls back to the pooled samples when a
side has no round indices, and ``Estimate.method`` says which was used. ``no_test`` is the test of a statistic
whose interval decides.

**Mark** (``mark``), the one rule:

- with a p-value: ``slower`` when ``ratio > factor`` and ``p < alpha``; ``faster`` when ``ratio < 1 / factor``
  and ``p < alpha``; ``not significant`` otherwise;
- without a p-value but with an interval, the interval is the test (``reports.rounds.verdict``): ``slower`` when
  ``ratio > factor`` and ``ci_low > 1``, ``faster`` when ``ratio < 1 / factor`` and ``ci_high < 1``;
- with neither (too few samples or rounds: nothing to test) the ratio alone decides, but only beyond an explicit
  ``factor > 1`` (as ``asv compare`` does); with ``factor == 1`` such a pair is ``n/a``;
- ``n/a`` without a ratio;
- a flagged pair (``flags``: a side is ``"noisy"`` or ``"inconsistent"``, ``reports.rounds``) that would be
  ``slower`` or ``faster`` is ``not judged (inconsistent)`` / ``not judged (noisy)`` instead, unless it is
  ``slower`` with ``ci_low > overrule`` (``compare`` passes its factor: an interval wholly above the factor is
  a regression however noisy the run). Flags do not change ``not significant`` or ``n/a``, nor a pair with
  neither p-value nor interval, where the ratio alone decides (too few samples to judge the noise by).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import rounds as _rounds
from .stats import DEFAULT_BOOTSTRAP, bootstrap_ratio_ci, mann_whitney_p

# Marks of a comparison: the same words in the report tables, ``compare`` and the targets.
FASTER, SLOWER, SAME, UNKNOWN, BASELINE = "faster", "slower", "not significant", "n/a", "baseline"
NOT_JUDGED_NOISY, NOT_JUDGED_INCONSISTENT = _rounds.NOT_JUDGED_NOISY, "not judged (inconsistent)"
# How an estimate was made (``Estimate.method``).
METHOD_POOLED = "bootstrap over samples"
METHOD_ROUND_MEDIANS = "bootstrap over rounds"
METHOD_FEW_ROUNDS = "judged on the ratio: too few rounds"
METHOD_FEW_SAMPLES = "judged on the ratio: too few samples"
METHOD_PROCESSES = "Welch t over processes"
# Rounds (or samples) a side needs for an interval between runs; with fewer the ratio alone decides.
MIN_UNITS = 3
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
    processes: np.ndarray | None = None  # the worker process of each sample (harness.processes), when recorded

    @property
    def center(self) -> float:
        return float(np.median(self.values)) if self.values.size else self.median


@dataclass(frozen=True)
class Estimate:
    """What a statistic returns: the ratio and its confidence interval (NaN when it cannot be computed), how it
    was made (``method``) and the number of independent units behind it (``units``: rounds; 0 for samples)."""

    ratio: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    method: str = METHOD_POOLED
    units: int = 0


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
    per_round = per_process = None
    if isinstance(rounds, (list, tuple, np.ndarray)) and len(rounds) == len(raw):
        per_round = np.asarray([rounds[i] for i in keep])
        owners = row.get("round_processes")
        if isinstance(owners, (list, tuple, np.ndarray)) and per_round.size and int(per_round.max()) < len(owners):
            per_process = np.asarray([owners[int(r)] for r in per_round])
    center = finite(row.get(median))
    return Sample(arr, math.nan if center is None else center, per_round, per_process)


def probe_of(row: Mapping[str, Any] | None) -> np.ndarray | None:
    """The row's per-round machine-speed probe (``harness.probe``: ``probe_ms``, one finite positive value per
    round of ``sample_rounds``), else ``None``."""
    if row is None:
        return None
    probe, rounds = row.get("probe_ms"), row.get("sample_rounds")
    if not isinstance(probe, (list, tuple, np.ndarray)) or not isinstance(rounds, (list, tuple, np.ndarray)):
        return None
    values = np.asarray([finite(v) for v in probe], dtype=float)  # None (not a finite number) becomes NaN
    if not values.size or not np.all(values > 0) or (len(rounds) and max(rounds) >= values.size):
        return None
    return values


def speed_corrected(row: Mapping[str, Any]) -> Sample | None:
    """The row's ``Sample`` with each sample divided by its round's probe time: timings in units of the machine's
    speed while they were taken (``None`` when the row has no usable probe)."""
    probe, sample = probe_of(row), sample_of(row)
    if probe is None or sample.rounds is None:
        return None
    scaled = sample.values / probe[sample.rounds.astype(int)]
    center = float(np.median(scaled)) if scaled.size else math.nan
    return Sample(scaled, center, sample.rounds)


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


def no_test(case: Sample, base: Sample) -> float:
    """No p-value: the statistic's interval decides (``mark``)."""
    return math.nan


def per_round(
    case: Sample, base: Sample, *, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> Estimate:
    """Two cases timed in the same rounds of one run: ``reports.rounds.per_round_ratio`` (median of the per-round
    ratios, order-statistics interval across rounds) when both sides have round indices, else
    ``ratio_of_medians``."""
    if case.rounds is None or base.rounds is None or not case.values.size or not base.values.size:
        return ratio_of_medians(case, base, level=level, n_boot=n_boot, seed=seed)
    got = _rounds.per_round_ratio(case.values, case.rounds, base.values, base.rounds, confidence=level, seed=seed)
    return Estimate(got.ratio, got.lo, got.hi, got.method, got.n_rounds)


def round_medians_of(sample: Sample) -> np.ndarray:
    """The median of each round of ``sample`` (in round order); its samples when it has no round indices."""
    if sample.rounds is None:
        return sample.values
    keys = np.unique(sample.rounds)
    return np.asarray([np.median(sample.values[sample.rounds == k]) for k in keys], dtype=float)


def round_medians(
    case: Sample, base: Sample, *, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> Estimate:
    """Two runs (their rounds do not pair): ``median(case's per-round medians) / median(base's per-round
    medians)`` with a percentile bootstrap interval that resamples each side's rounds (not samples). A side
    without round indices makes it the pooled samples' ratio of medians with the bootstrap over samples. With
    fewer than ``MIN_UNITS`` rounds (or samples) on a side there is no interval and ``method`` says the ratio
    alone decides."""
    with_rounds = case.rounds is not None and base.rounds is not None
    if not with_rounds:
        case, base = Sample(case.values, case.median), Sample(base.values, base.median)
    num, den = round_medians_of(case), round_medians_of(base)
    units = min(num.size, den.size)
    if units < MIN_UNITS:
        top, bottom = (np.median(num) if num.size else case.median), (np.median(den) if den.size else base.median)
        ratio = float(top / bottom) if math.isfinite(bottom) and bottom != 0 else math.nan
        method = METHOD_FEW_ROUNDS if with_rounds else METHOD_FEW_SAMPLES
        return Estimate(ratio, math.nan, math.nan, method, units if with_rounds else 0)
    low, high = bootstrap_ratio_ci(num, den, level=level, n_boot=n_boot, seed=seed)
    method = METHOD_ROUND_MEDIANS if with_rounds else METHOD_POOLED
    return Estimate(float(np.median(num) / np.median(den)), low, high, method, units if with_rounds else 0)


def process_medians_of(sample: Sample) -> np.ndarray:
    """Each worker process's median of its per-round medians (in process order); empty without processes."""
    if sample.processes is None or sample.rounds is None:
        return np.empty(0)
    out = []
    for process in np.unique(sample.processes):
        mine = sample.processes == process
        out.append(np.median(round_medians_of(Sample(sample.values[mine], rounds=sample.rounds[mine]))))
    return np.asarray(out, dtype=float)


def welch_log_ratio(case: np.ndarray, base: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float, float]:
    """``(ratio, low, high)``: the ratio of the geometric means of two sets of positive times with the Welch t
    interval (``scipy.stats.ttest_ind``, ``equal_var=False``) of the difference of their log means at ``level``
    (two or more values a side; when neither side has any spread, the interval is the ratio itself)."""
    from scipy import stats as _stats

    a, b = np.log(np.asarray(base, dtype=float)), np.log(np.asarray(case, dtype=float))
    ratio = math.exp(float(b.mean() - a.mean()))
    if a.var() == 0.0 and b.var() == 0.0:
        return ratio, ratio, ratio
    interval = _stats.ttest_ind(b, a, equal_var=False).confidence_interval(level)
    return ratio, math.exp(float(interval.low)), math.exp(float(interval.high))


def between_runs(
    case: Sample, base: Sample, *, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> Estimate:
    """Two runs: with ``MIN_UNITS`` or more worker processes a side (``harness.processes``), the processes are the
    units: the ratio of the geometric means of each process's median (of its per-round medians), with a Welch t
    interval on their logs; otherwise ``round_medians``."""
    num, den = process_medians_of(case), process_medians_of(base)
    if min(num.size, den.size) < MIN_UNITS:
        return round_medians(case, base, level=level, n_boot=n_boot, seed=seed)
    ratio, low, high = welch_log_ratio(num, den, level)
    return Estimate(ratio, low, high, METHOD_PROCESSES, int(min(num.size, den.size)))


# ------------------------------------------------------------------------------------------------------------
# The mark.
# ------------------------------------------------------------------------------------------------------------
def mark(
    ratio: float,
    p_value: float = math.nan,
    *,
    alpha: float = DEFAULT_ALPHA,
    factor: float = 1.0,
    ci_low: float = math.nan,
    ci_high: float = math.nan,
    flags: Collection[str] = (),
    overrule: float = math.inf,
) -> str:
    """The one mark rule (see the module docstring): ``slower`` / ``faster`` beyond ``factor`` with
    ``p < alpha``, else with the interval clear of 1 when there is no p-value; ``not significant`` otherwise;
    with neither the ratio decides beyond a ``factor > 1`` and the pair is ``n/a`` with ``factor == 1``; ``n/a``
    without a ratio. A change of a flagged pair is ``not judged (...)`` unless ``slower`` with
    ``ci_low > overrule``."""
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 1.0):
        raise ValueError(f"factor: expected a ratio >= 1 (e.g. 1.1 for 10%); got {factor!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a significance level in (0, 1); got {alpha!r}")
    if not math.isfinite(ratio):
        return UNKNOWN
    if math.isfinite(p_value):
        significant = p_value < alpha
        got = SLOWER if significant and ratio > factor else FASTER if significant and ratio < 1.0 / factor else SAME
    elif math.isfinite(ci_low) and math.isfinite(ci_high):
        interval = _rounds.RoundRatio(ratio, ci_low, ci_high, 0, "")
        got = {_rounds.SLOWER: SLOWER, _rounds.FASTER: FASTER}.get(_rounds.verdict(interval, factor), SAME)
    elif factor > 1.0:  # nothing to test (nor to judge noise by): the ratio beyond the factor decides
        return SLOWER if ratio > factor else FASTER if ratio < 1.0 / factor else SAME
    else:
        return UNKNOWN
    if not flags or got not in (SLOWER, FASTER) or (got == SLOWER and ci_low > overrule):
        return got
    return NOT_JUDGED_INCONSISTENT if _rounds.FLAG_INCONSISTENT in flags else NOT_JUDGED_NOISY


@dataclass(frozen=True)
class Judged:
    """A compared pair: the estimate, the p-value (NaN when untested), the mark, and the estimate's method and
    units (rounds)."""

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    mark: str
    method: str = METHOD_POOLED
    units: int = 0

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
    flags: Collection[str] = (),
    overrule: float = math.inf,
) -> Judged:
    """Estimate, test and mark ``case`` against ``base`` (``flags`` and ``overrule``: see ``mark``)."""
    est = statistic(case, base, level=level, n_boot=n_boot, seed=seed)
    p = test(case, base)
    got = mark(est.ratio, p, alpha=alpha, factor=factor, ci_low=est.ci_low, ci_high=est.ci_high, flags=flags,
               overrule=overrule)
    return Judged(est.ratio, est.ci_low, est.ci_high, p, got, est.method, est.units)


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
    "METHOD_FEW_ROUNDS",
    "METHOD_PROCESSES",
    "METHOD_FEW_SAMPLES",
    "METHOD_POOLED",
    "METHOD_ROUND_MEDIANS",
    "MIN_UNITS",
    "NOT_JUDGED_INCONSISTENT",
    "NOT_JUDGED_NOISY",
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
    "no_test",
    "per_round",
    "probe_of",
    "ratio_of_medians",
    "round_medians",
    "round_medians_of",
    "sample_of",
    "speed_corrected",
]
