"""Summaries of recovery results rows: per gate and framework mean +- standard error over seeds, a paired
Wilcoxon signed-rank test against a baseline gate (same seeds, same framework), and the PyTorch-vs-TensorFlow
comparison of each gate (paired Wilcoxon on the same seeds and a Mann-Whitney U test of the two distributions).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from gates import FRAMEWORKS, GATE_NAMES

from .metrics import mann_whitney, mean_se, paired_wilcoxon
from .run import METRICS


def _by_seed(rows: Iterable[dict[str, Any]], metric: str) -> dict[int, float]:
    return {int(r["seed"]): float("nan") if r.get(metric) is None else float(r[metric]) for r in rows}


def summarise_rows(rows: Sequence[dict[str, Any]], baseline: str = "topk",
                   metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """Group ``status == "ok"`` recovery rows by problem; return, per problem, the cells (gate x framework) with
    ``mean``/``se``/``count`` of each metric and the Wilcoxon test of F1 against ``baseline``, and per gate the
    framework comparison of F1."""
    groups: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get("kind") == "recovery" and row.get("status") == "ok":
            groups[str(row.get("problem", "default"))][(row["gate"], row["framework"])].append(row)
    out: dict[str, Any] = {}
    for problem, cells in groups.items():
        table = []
        for framework in FRAMEWORKS:
            for gate in GATE_NAMES:
                runs = cells.get((gate, framework))
                if not runs:
                    continue
                cell: dict[str, Any] = {"gate": gate, "framework": framework, "seeds": len(runs),
                                        "selection": runs[0].get("selection")}
                for metric in metrics:
                    mean, se, count = mean_se([float("nan") if r.get(metric) is None else r[metric] for r in runs])
                    cell[metric] = {"mean": mean, "se": se, "count": count}
                base = cells.get((baseline, framework))
                if base and gate != baseline:
                    a, b = _by_seed(runs, "f1"), _by_seed(base, "f1")
                    seeds = sorted(set(a) & set(b))
                    cell["wilcoxon_f1_vs_" + baseline] = paired_wilcoxon([a[s] for s in seeds], [b[s] for s in seeds])
                table.append(cell)
        frameworks = []
        for gate in GATE_NAMES:
            t, f = cells.get((gate, "torch")), cells.get((gate, "tf"))
            if not t or not f:
                continue
            a, b = _by_seed(t, "f1"), _by_seed(f, "f1")
            seeds = sorted(set(a) & set(b))
            frameworks.append({
                "gate": gate, "paired_seeds": len(seeds),
                "identical_f1_seeds": sum(a[s] == b[s] for s in seeds),
                "wilcoxon_f1": paired_wilcoxon([a[s] for s in seeds], [b[s] for s in seeds]),
                "mann_whitney_f1": mann_whitney(list(a.values()), list(b.values())),
            })
        out[problem] = {"cells": table, "torch_vs_tf": frameworks, "baseline": baseline}
    return out


def _fmt(stat: dict[str, float], digits: int = 3) -> str:
    mean, se = stat["mean"], stat["se"]
    if mean != mean:  # nan
        return "-"
    return f"{mean:.{digits}f} ± {se:.{digits}f}" if se == se else f"{mean:.{digits}f}"


def markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown tables (one per problem)."""
    lines: list[str] = []
    for problem, part in summary.items():
        base = part["baseline"]
        lines += [f"### Problem `{problem}`", "",
                  f"| gate | framework | seeds | F1 | exact support | nnz | test MSE | steps to support (runs) "
                  f"| support changes | Wilcoxon F1 vs {base} (p) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in part["cells"]:
            w = c.get(f"wilcoxon_f1_vs_{base}")
            wtxt = f"{w['median_diff']:+.3f} (p={w['p_value']:.3g})" if w else "-"
            wtxt = "baseline" if c["gate"] == base else wtxt
            sts = c["steps_to_support"]
            lines.append(
                f"| {c['gate']}{' (top-k of dense)' if c['selection'] == 'topk_of_dense' else ''} | {c['framework']} "
                f"| {c['seeds']} | {_fmt(c['f1'])} | {_fmt(c['exact_support_rate'])} | {_fmt(c['nnz'], 2)} "
                f"| {_fmt(c['test_mse'], 4)} | {_fmt(sts, 0)} ({sts['count']}) | {_fmt(c['support_changes'], 2)} "
                f"| {wtxt} |"
            )
        if part["torch_vs_tf"]:
            lines += ["", "| gate | paired seeds | identical F1 | Wilcoxon torch - tf (p) | Mann-Whitney p |",
                      "|---|---|---|---|---|"]
            for f in part["torch_vs_tf"]:
                w, m = f["wilcoxon_f1"], f["mann_whitney_f1"]
                lines.append(f"| {f['gate']} | {f['paired_seeds']} | {f['identical_f1_seeds']} "
                             f"| {w['median_diff']:+.3f} (p={w['p_value']:.3g}) | {m['p_value']:.3g} |")
        lines.append("")
    return "\n".join(lines)
