"""A study's verdict as a Markdown table (``table``), and its sparsity trace (``trace_table``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["table", "trace_table"]


def _pm(stat: Mapping[str, float] | None, digits: int = 3) -> str:
    if not stat or stat.get("count", 0) == 0 or math.isnan(stat["mean"]):
        return "-"
    se = stat["se"]
    return f"{stat['mean']:.{digits}f} ± {se:.{digits}f}" if not math.isnan(se) else f"{stat['mean']:.{digits}f}"


def _test(test: Mapping[str, float] | None) -> str:
    if not test or not test.get("pairs"):
        return "baseline" if test is None else "-"
    return f"{test['median_diff']:+.3f} (p={test['p_value']:.3g}, Holm {test['p_holm']:.3g})"


def _values(best: Mapping[str, Any]) -> str:
    values = best.get("values") or {}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "defaults"


def table(result: Mapping[str, Any]) -> str:
    """One row per gate: best trial and parameters, validation error, test accuracy per task and averaged (mean ±
    s.e. over held-out seeds), experts used per task (non-zero weights, entropy), the Wilcoxon test vs the
    baseline on the averaged accuracy (median difference, p, Holm-corrected p) and training seconds per run."""
    tasks = result["tasks"]
    head = ["gate", "framework", "gating", "best trial", "val error", "best parameters", "test acc (mean)",
            *(f"acc {t}" for t in tasks), "nnz per task", "entropy", f"acc vs {result['baseline']} (Holm)", "s/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    gating = result.get("problem", {}).get("gating", "")
    for gate, info in result["gates"].items():
        s, best = info["summary"], info.get("best", {})
        nnz = " / ".join(_pm(s[f"nnz_{t}"], 2) for t in tasks)
        val = "-" if best.get("val_error") is None else f"{best['val_error']:.4f}"
        tests = info["tests"].get("acc_mean") if gate != result["baseline"] else None
        secs = s["train_ms"]["mean"] / 1e3 if s["train_ms"]["count"] else math.nan
        cells = [gate, result.get("framework", ""), gating, str(best.get("trial", "-")), val, _values(best),
                 _pm(s["acc_mean"]), *(_pm(s[f"acc_{t}"]) for t in tasks), nnz, _pm(s["entropy_mean"], 2),
                 _test(tests), f"{secs:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trace_table(result: Mapping[str, Any], every: int = 1) -> str:
    """Mean non-zero weights per task gate over training (averaged over tasks and held-out seeds), per gate."""
    gates = list(result["gates"])
    steps = next((info["nnz_trace"]["eval_steps"] for info in result["gates"].values()
                  if info["nnz_trace"]["eval_steps"]), [])
    lines = ["| step | " + " | ".join(gates) + " |", "|---|" + "---|" * len(gates)]
    for i, step in enumerate(steps):
        if i % every and i != len(steps) - 1:
            continue
        cells = []
        for gate in gates:
            trace = result["gates"][gate]["nnz_trace"]["mean"]
            cells.append(f"{trace[i]:.2f}" if i < len(trace) else "-")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
