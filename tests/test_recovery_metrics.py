"""Recovery metrics and statistics (NumPy / SciPy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.recovery.metrics import (
    mann_whitney,
    match_experts,
    mean_se,
    paired_wilcoxon,
    select,
    steps_to_support,
    support_changes,
    support_changes_trace,
    support_scores,
    to_planted_order,
)


def test_select_sparse_gates_use_nonzeros_and_softmax_its_top_k():
    w = np.array([[0.0, 0.5, 0.0, 0.5], [0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_array_equal(select(w, "topk", 2), w > 0)
    np.testing.assert_array_equal(select(w, "softmax", 2), [[False, True, False, True], [False, False, True, True]])
    ties = select(np.full(4, 0.25), "softmax", 1)
    np.testing.assert_array_equal(ties, [True, False, False, False])  # ties go to the lower index
    with pytest.raises(ValueError, match="gate: expected one of"):
        select(w, "moe", 2)


def test_support_scores():
    planted = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]], dtype=bool)
    selected = np.array([[1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
    s = support_scores(selected, planted)
    # rows: (P, R) = (1, 1), (2/3, 1), (0, 0) -> F1 = 1, 0.8, 0
    assert s["precision"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx((1 + 0.8 + 0) / 3)
    assert s["exact_support_rate"] == pytest.approx(1 / 3)
    assert s["nnz"] == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="selected: expected the shape of planted"):
        support_scores(selected[:2], planted)


def test_steps_to_support_and_changes():
    planted = np.array([[1, 0, 1]], dtype=bool)
    wrong, right = np.array([[1, 1, 0]], dtype=bool), planted
    history = np.stack([wrong, right, wrong, right, right, right])
    steps = [10, 20, 30, 40, 50, 60]
    assert steps_to_support(history, planted, steps) == 40  # right from step 40 to the end
    assert math.isnan(steps_to_support(np.stack([right, wrong]), planted, [1, 2]))
    assert steps_to_support(np.stack([right, right]), planted, [5, 10]) == 5
    # Last half (records 3..5): right, right, right -> no change; whole history has 3 changes.
    assert support_changes(history) == 0
    assert support_changes(np.stack([right, wrong, right, wrong])) == 1.0  # last half: right -> wrong


def test_match_experts_recovers_a_permutation():
    rng = np.random.default_rng(0)
    planted = rng.normal(size=(500, 6))
    perm_true = rng.permutation(6)  # learned expert j is a noisy, scaled copy of planted expert perm_true[j]
    learned = 3.0 * planted[:, perm_true] + 0.3 * rng.normal(size=(500, 6))
    perm, corr = match_experts(learned, planted)
    np.testing.assert_array_equal(perm, perm_true)
    assert (corr > 0.9).all()
    selected = np.zeros(6, dtype=bool)
    selected[[0, 2]] = True  # learned experts 0 and 2
    np.testing.assert_array_equal(np.flatnonzero(to_planted_order(selected, perm)), np.sort(perm_true[[0, 2]]))


def test_mean_se():
    mean, se, count = mean_se([1.0, 2.0, 3.0, float("nan")])
    assert (mean, count) == (2.0, 3) and se == pytest.approx(1.0 / math.sqrt(3))
    assert math.isnan(mean_se([float("nan")])[0])
    assert math.isnan(mean_se([4.0])[1])


def test_paired_wilcoxon_and_mann_whitney():
    a = np.linspace(0.8, 0.9, 12)
    res = paired_wilcoxon(a, a - 0.1)
    assert res["p_value"] < 0.01 and res["median_diff"] == pytest.approx(0.1)
    assert paired_wilcoxon(a, a)["p_value"] == 1.0
    noisy = paired_wilcoxon(a, a + np.tile([0.01, -0.01], 6))
    assert noisy["p_value"] > 0.5
    with pytest.raises(ValueError, match="values: expected the shape of baseline"):
        paired_wilcoxon(a[:3], a)
    assert mann_whitney(a, a + 1)["p_value"] < 0.001
    assert mann_whitney([1.0, 1.0], [1.0, 1.0])["p_value"] == 1.0


def test_support_changes_trace_counts_rows_that_changed_at_each_evaluation():
    a = np.array([[True, False, True], [False, True, True]])  # two rows, n = 3
    b = a.copy()
    b[0] = [False, True, True]  # row 0 changes, row 1 does not
    history = np.stack([a, b, b, a, a])  # (E=5, R=2, n=3)
    assert support_changes_trace(history) == [0.0, 0.5, 0.0, 0.5, 0.0]
    assert support_changes_trace(history, initial=b) == [0.5, 0.5, 0.0, 0.5, 0.0]
    assert support_changes_trace(history, initial=a)[0] == 0.0
    # Its last half sums to support_changes (same quantity, per evaluation instead of summed).
    for hist in (history, np.stack([a, b] * 4), np.stack([a] * 7)):
        trace = support_changes_trace(hist)
        assert len(trace) == hist.shape[0]
        assert sum(trace[hist.shape[0] // 2 + 1 :]) == pytest.approx(support_changes(hist))
    with pytest.raises(ValueError, match=r"initial: expected shape \(2, 3\)"):
        support_changes_trace(history, initial=a[:1])
    with pytest.raises(ValueError, match="history: expected a bool array"):
        support_changes_trace(a)
