"""Statistics of the timing comparisons: a bootstrap interval of a ratio of medians, the Mann-Whitney U test.

All functions take NumPy arrays of raw samples (milliseconds for timings) and are deterministic for a given
``seed``. ``reports.comparison`` combines them into a ratio, a test and a mark. The statistics over recovery
seeds (mean +- s.e., the paired Wilcoxon signed-rank test) are ``harness.recovery.metrics``'s, summarised once
by ``harness.recovery.report.summarise_groups``.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BOOTSTRAP = 2000


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
