"""Statistics of the timing reports: ratio of medians with a bootstrap interval, Mann-Whitney U, marks.

All functions take NumPy arrays of raw samples (milliseconds for timings) and are deterministic for a given
``seed``. The statistics over recovery seeds (mean +- s.e., the paired Wilcoxon signed-rank test against a
baseline) have one implementation, ``harness.recovery.metrics`` (``mean_se``, ``paired_wilcoxon``), shared by
``gatebench recover``/``gatebench run`` and the report's recovery table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Marks of a comparison (the same in the report tables and in ``gatebench compare``).
FASTER, SLOWER, SAME, UNKNOWN = "faster", "slower", "not significant", "n/a"
DEFAULT_ALPHA = 0.05
DEFAULT_BOOTSTRAP = 2000


@dataclass(frozen=True)
class RatioStats:
    """``ratio = median(a) / median(b)`` with a bootstrap confidence interval and a Mann-Whitney U p-value.

    ``ci_low``/``ci_high`` are NaN and ``p_value`` is NaN when either side has fewer than two samples.
    """

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    n_a: int
    n_b: int


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a confidence level in (0, 1); got {level!r}")


def bootstrap_ratio_ci(
    a: np.ndarray, b: np.ndarray, *, level: float = 0.95, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``median(a) / median(b)``.

    Each of the ``n_boot`` replicates resamples ``a`` and ``b`` independently with replacement (shapes
    ``(n_a,)`` and ``(n_b,)``) and takes the ratio of the resampled medians; the interval is the ``(1 - level)
    / 2`` and ``(1 + level) / 2`` quantiles of the replicates.
    """
    _check_level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot: expected a positive number of bootstrap replicates; got {n_boot!r}")
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # Shape = (n_boot, n_a) and (n_boot, n_b): one resample per row.
    med_a = np.median(a[rng.integers(0, a.size, size=(n_boot, a.size))], axis=1)
    med_b = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    ratios = med_a / med_b
    low, high = np.quantile(ratios, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value of ``a`` vs ``b`` (NaN with fewer than two samples on a side)."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return float("nan")
    if np.array_equal(np.sort(a), np.sort(b)):
        return (
            1.0  # identical samples: no evidence of a difference (scipy agrees, this skips its tie warnings)
        )
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def ratio_stats(
    a: np.ndarray,
    b: np.ndarray,
    *,
    median_a: float | None = None,
    median_b: float | None = None,
    level: float = 0.95,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> RatioStats:
    """Ratio of ``a`` to ``b`` (medians; the given medians are used when a side has no samples)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    med_a = float(np.median(a)) if a.size else (float("nan") if median_a is None else float(median_a))
    med_b = float(np.median(b)) if b.size else (float("nan") if median_b is None else float(median_b))
    ratio = med_a / med_b if med_b not in (0.0,) and np.isfinite(med_b) else float("nan")
    low, high = bootstrap_ratio_ci(a, b, level=level, n_boot=n_boot, seed=seed)
    return RatioStats(
        ratio=float(ratio),
        ci_low=low,
        ci_high=high,
        p_value=mann_whitney_p(a, b),
        n_a=int(a.size),
        n_b=int(b.size),
    )


def mark(ratio: float, p_value: float, *, alpha: float = DEFAULT_ALPHA, factor: float = 1.0) -> str:
    """``slower`` / ``faster`` when the difference is significant (``p < alpha``) and the ratio is beyond
    ``factor`` (above ``factor`` or below ``1 / factor``); ``not significant`` otherwise; ``n/a`` without a
    p-value or a ratio."""
    if factor < 1.0:
        raise ValueError(f"factor: expected a ratio >= 1; got {factor!r}")
    if not np.isfinite(ratio) or not np.isfinite(p_value):
        return UNKNOWN
    if p_value < alpha and ratio > factor:
        return SLOWER
    if p_value < alpha and ratio < 1.0 / factor:
        return FASTER
    return SAME
