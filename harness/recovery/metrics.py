"""Recovery metrics and statistics over seeds: NumPy and SciPy only.

A run is scored on its *selected sets*: for the sparse gates (Top-k, DSelect-k, hard concrete, sigmoid_topk,
sparsemax, entmax15, ReMoE) the experts with non-zero test-time weight; for softmax, whose weights are all
positive, its ``k`` largest weights (``selection = "topk_of_dense"``). Rows are tasks (static) or test examples
(per-example); each row is compared with its planted support and the scores are averaged over rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The support of a run is the set of experts with non-zero test-time weight wherever the gate has exact zeros:
# Top-k, DSelect-k (once its selectors saturate), hard concrete, sigmoid_topk (k experts by biased score, weighted
# by their unbiased sigmoid scores: never 0), sparsemax and entmax15 (exact zeros by construction) and ReMoE (ReLU:
# exact zeros, how many steered by its L1 term). Only softmax is dense: its support is its k largest weights.
SELECTIONS = {"softmax": "topk_of_dense", "topk": "nonzero", "dselect_k": "nonzero", "hard_concrete": "nonzero",
              "sigmoid_topk": "nonzero", "sparsemax": "nonzero", "entmax15": "nonzero", "remoe": "nonzero"}


def select(weights: np.ndarray, gate: str, k: int) -> np.ndarray:
    """``weights (..., n) -> bool (..., n)``: the selected experts (see the module docstring).

    Softmax: the ``k`` largest weights (ties to the lower index, a stable sort); others: ``weights > 0``.
    """
    weights = np.asarray(weights)
    if gate not in SELECTIONS:
        raise ValueError(f"gate: expected one of {', '.join(SELECTIONS)}; got {gate!r}")
    if gate != "softmax":
        return weights > 0
    order = np.argsort(-weights, axis=-1, kind="stable")[..., :k]
    out = np.zeros(weights.shape, dtype=bool)
    np.put_along_axis(out, order, True, axis=-1)
    return out


def support_scores(selected: np.ndarray, planted: np.ndarray) -> dict[str, float]:
    """Mean over rows of precision, recall and F1 of ``selected (R, n)`` against ``planted (R, n)``, the rate of
    exactly right rows, and the mean number of selected experts (``nnz``).

    An empty selection has precision 0 (and F1 0): a gate that selects nothing has found nothing.
    """
    selected, planted = np.asarray(selected, dtype=bool), np.asarray(planted, dtype=bool)
    if selected.shape != planted.shape or selected.ndim != 2:
        raise ValueError(f"selected: expected the shape of planted (rows, n) {planted.shape}; got {selected.shape}")
    hits = (selected & planted).sum(axis=1).astype(float)
    n_sel, n_true = selected.sum(axis=1).astype(float), planted.sum(axis=1).astype(float)
    precision = np.divide(hits, n_sel, out=np.zeros_like(hits), where=n_sel > 0)
    recall = np.divide(hits, n_true, out=np.zeros_like(hits), where=n_true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(hits), where=denom > 0)
    return {
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        "exact_support_rate": float((selected == planted).all(axis=1).mean()),
        "nnz": float(n_sel.mean()),
    }


def steps_to_support(history: np.ndarray, planted: np.ndarray, eval_steps: Sequence[int]) -> float:
    """The first recorded step from which every row's selection equals its planted support until the end of
    training; ``nan`` if that never happens. ``history (E, R, n)`` bool, one entry per ``eval_steps``."""
    history = np.asarray(history, dtype=bool)
    right = (history == np.asarray(planted, dtype=bool)[None]).all(axis=(1, 2))  # (E,)
    if right.size == 0 or not right[-1]:
        return math.nan
    wrong = np.flatnonzero(~right)
    first = 0 if wrong.size == 0 else int(wrong[-1]) + 1
    return float(eval_steps[first])


def support_changes(history: np.ndarray) -> float:
    """Support (in)stability: over the last half of the recorded selections, how many times a row's selected set
    changes between consecutive records, averaged over rows (0 = the selection has settled)."""
    history = np.asarray(history, dtype=bool)
    half = history[history.shape[0] // 2 :]
    if half.shape[0] < 2:
        return 0.0
    changed = (half[1:] != half[:-1]).any(axis=-1)  # (E/2 - 1, R)
    return float(changed.sum(axis=0).mean())


def support_changes_trace(history: np.ndarray, initial: np.ndarray | None = None) -> list[float]:
    """Support changes over training, one value per recorded selection: ``trace[e]`` is the fraction of rows
    whose selected set at record ``e`` differs from record ``e - 1`` (for ``e = 0``: from ``initial (R, n)``, the
    selection before the first step, or 0.0 when it is not given).

    ``history (E, R, n)`` bool. The trace sums to ``support_changes`` over its last half:
    ``sum(trace[E // 2 + 1:]) == support_changes(history)``.
    """
    history = np.asarray(history, dtype=bool)
    if history.ndim != 3:
        raise ValueError(f"history: expected a bool array (E, R, n); got shape {history.shape}")
    changed = (history[1:] != history[:-1]).any(axis=-1).mean(axis=-1)  # (E - 1,)
    if initial is None:
        first = 0.0
    else:
        initial = np.asarray(initial, dtype=bool)
        if initial.shape != history.shape[1:]:
            raise ValueError(f"initial: expected shape {history.shape[1:]} (R, n); got {initial.shape}")
        first = float((history[0] != initial).any(axis=-1).mean())
    return [first] + [float(v) for v in changed]


def match_experts(learned: np.ndarray, planted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of learned to planted experts on output correlation.

    ``learned (M, n)``, ``planted (M, n)``: the experts' outputs on the same inputs. Returns ``perm (n,)`` with
    ``perm[j]`` the planted expert matched to learned expert ``j`` (maximising the summed correlation), and the
    matched correlations ``(n,)``.
    """
    from scipy.optimize import linear_sum_assignment

    learned, planted = np.asarray(learned, dtype=float), np.asarray(planted, dtype=float)
    if learned.shape != planted.shape or learned.ndim != 2:
        raise ValueError(f"learned: expected the shape of planted (M, n) {planted.shape}; got {learned.shape}")
    n = learned.shape[1]
    corr = np.corrcoef(learned.T, planted.T)[:n, n:]  # (n learned, n planted)
    corr = np.nan_to_num(corr, nan=0.0)  # a constant expert correlates with nothing
    rows, cols = linear_sum_assignment(-corr)
    perm = np.empty(n, dtype=np.int64)
    perm[rows] = cols
    return perm, corr[rows, cols][np.argsort(rows)]


def to_planted_order(selected: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Re-index a selection over learned experts ``(..., n)`` into planted-expert order using ``perm``."""
    out = np.zeros_like(selected)
    out[..., perm] = selected
    return out


# --------------------------------------------------------------------------------------------------------------
# Statistics over seeds.
# --------------------------------------------------------------------------------------------------------------
def mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float, int]:
    """Mean and standard error (sample standard deviation / sqrt(count)) over the finite values, and their count.
    ``(nan, nan, 0)`` without finite values; the standard error of a single value is ``nan``."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan, math.nan, 0
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return float(arr.mean()), se, int(arr.size)


def paired_wilcoxon(
    values: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Two-sided Wilcoxon signed-rank test of ``values - baseline`` over paired seeds (same seed, same data).

    Returns the median difference, the statistic and the p-value; when every difference is zero the test has
    nothing to rank, and the p-value is reported as 1.0 (no evidence of a difference). Pairs with a non-finite
    value are left out (``pairs`` counts those kept). With few pairs the p-value cannot be small: with ``n``
    pairs and no ties the smallest two-sided p is ``2 / 2**n`` (0.0625 for 5 pairs), so 6 or more seeds are
    needed for ``p < 0.05``. This is the one paired test of the project (CLI summaries and the report).
    """
    from scipy import stats

    a, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"values: expected the shape of baseline {b.shape} (paired by seed); got {a.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    if diff.size == 0:
        return {"median_diff": math.nan, "statistic": math.nan, "p_value": math.nan, "pairs": 0}
    if np.all(diff == 0):
        return {"median_diff": 0.0, "statistic": 0.0, "p_value": 1.0, "pairs": int(diff.size)}
    res = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
    return {
        "median_diff": float(np.median(diff)), "statistic": float(res.statistic), "p_value": float(res.pvalue),
        "pairs": int(diff.size),
    }


def mann_whitney(values: Sequence[float], other: Sequence[float]) -> dict[str, float]:
    """Two-sided Mann-Whitney U test between two samples (e.g. one gate's metric in two frameworks).
    Identical samples of one repeated value give p = 1.0."""
    from scipy import stats

    a, b = np.asarray(values, dtype=float), np.asarray(other, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return {"statistic": math.nan, "p_value": math.nan}
    if np.unique(np.concatenate([a, b])).size == 1:
        return {"statistic": float(a.size * b.size / 2), "p_value": 1.0}
    res = stats.mannwhitneyu(a, b, alternative="two-sided")
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue)}
