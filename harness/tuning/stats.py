"""The verdict on held-out seeds: mean ± standard error per gate, the paired Wilcoxon signed-rank test of each
gate against the baseline gate (same seeds, same data) and Holm's step-down correction across the gates compared.

Holm (1979), for ``m`` p-values sorted ascending ``p_(1) <= ... <= p_(m)``: the adjusted
``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where ``p~ <= alpha`` controls the family-wise error
rate at ``alpha``. (``scipy.stats.false_discovery_control`` is Benjamini-Hochberg, a different guarantee.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.recovery.metrics import mean_se, paired_wilcoxon

__all__ = ["HELDOUT_METRICS", "holm", "summarise_runs", "compare_gates"]

# What the verdict reports per gate, in display order.
HELDOUT_METRICS: tuple[str, ...] = ("f1", "exact_support_rate", "test_mse", "nnz")
# The metrics tested against the baseline (each with its own Holm family over the gates).
TESTED_METRICS: tuple[str, ...] = ("f1", "exact_support_rate", "test_mse")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given. NaN p-values (no test) stay NaN and are not counted in ``m``."""
    values = [float(p) for p in p_values]
    for p in values:
        if not (math.isnan(p) or 0.0 <= p <= 1.0):
            raise ValueError(f"p_values: expected numbers in [0, 1] or nan; got {p!r}")
    order = sorted((i for i, p in enumerate(values) if not math.isnan(p)), key=lambda i: values[i])
    m, running, out = len(order), 0.0, [math.nan] * len(values)
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[index]))
        out[index] = running
    return out


def _by_seed(runs: Sequence[Mapping[str, Any]], metric: str) -> dict[int, float]:
    out = {}
    for run in runs:
        value = run.get(metric)
        out[int(run["seed"])] = math.nan if value is None else float(value)
    return out


def summarise_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard error and count over seeds of each of ``HELDOUT_METRICS``."""
    out = {}
    for metric in HELDOUT_METRICS:
        mean, se, count = mean_se(list(_by_seed(runs, metric).values()))
        out[metric] = {"mean": mean, "se": se, "count": count}
    return out


def compare_gates(runs: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str) -> dict[str, dict[str, Any]]:
    """Per gate: its summary and, for every gate but the baseline, per tested metric the paired Wilcoxon test
    against the baseline on the seeds both have (``median_diff``, ``p_value``, ``pairs``) with ``p_holm``, Holm's
    correction over the gates compared (one family per metric)."""
    if baseline not in runs:
        raise ValueError(f"baseline: expected one of the gates compared ({', '.join(runs)}); got {baseline!r}")
    out: dict[str, dict[str, Any]] = {gate: {"summary": summarise_runs(gate_runs), "tests": {}}
                                      for gate, gate_runs in runs.items()}
    others = [gate for gate in runs if gate != baseline]
    for metric in TESTED_METRICS:
        base = _by_seed(runs[baseline], metric)
        tests = {}
        for gate in others:
            mine = _by_seed(runs[gate], metric)
            seeds = sorted(set(mine) & set(base))
            tests[gate] = paired_wilcoxon([mine[s] for s in seeds], [base[s] for s in seeds]) if seeds else {
                "median_diff": math.nan, "statistic": math.nan, "p_value": math.nan, "pairs": 0}
        adjusted = holm([tests[gate]["p_value"] for gate in others])
        for gate, p_holm in zip(others, adjusted, strict=True):
            out[gate]["tests"][metric] = {**tests[gate], "p_holm": p_holm}
    return out
