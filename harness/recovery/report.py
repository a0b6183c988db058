"""Summaries of recovery results rows, written once: ``summarise_groups`` (per group of rows, mean +- standard
error over seeds of each metric and a paired Wilcoxon signed-rank test against the baseline gate's rows of the
same configuration) is what ``gatebench recover`` / ``gatebench run`` (``summarise_rows``, ``markdown``), the
report's recovery table (``reports.tables.recovery_table``) and the sweep script's summary show; plus the
PyTorch-vs-TensorFlow comparison of each gate (paired Wilcoxon on the same seeds, Mann-Whitney U of the two
distributions).
"""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from gates import FRAMEWORKS, GATE_NAMES

from .metrics import mann_whitney, mean_se, paired_wilcoxon
from .run import METRICS


def _value(row: Mapping[str, Any], metric: str) -> float:
    value = row.get(metric)
    try:
        return float("nan") if value is None else float(value)
    except (TypeError, ValueError):
        return float("nan")


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (a knob missing from both rows)."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _order(value: Any) -> tuple:
    """Numbers before text, numbers by value (a sort key for mixed key columns)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _per_seed(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[Any, float]:
    """``metric`` per seed, the mean of its finite values when a seed has several rows (NaN without one)."""
    by: dict[Any, list[float]] = defaultdict(list)
    for row in rows:
        by[row["seed"]].append(_value(row, metric))
    return {seed: mean_se(values)[0] for seed, values in by.items()}


def find_baseline(candidates: Sequence[Mapping[str, Any]], first: Mapping[str, Any], match: Sequence[str],
                  baseline: str, relax: bool | Collection[str]) -> tuple[list[Mapping[str, Any]] | None, str]:
    """The baseline gate's rows for the configuration of ``first`` (same framework and same ``match`` values),
    and how their settings differ ("" when they do not).

    With ``relax`` (true: every ``match`` column; or the names of those that may be), a column whose value the
    baseline does not have (a knob swept for one gate only,
    such as DSelect-k's ``entropy_reg``) is relaxed; the match is used when the remaining baseline rows form one
    configuration, and its differing settings are returned; with several there is no baseline (``None``).
    """
    cand = [r for r in candidates if r.get("gate") == baseline and _same(r.get("framework"), first.get("framework"))]
    if not cand or first.get("gate") == baseline:
        return (cand or None), ""
    relaxed = []
    for key in match:
        same = [r for r in cand if _same(r.get(key), first.get(key))]
        if same:
            cand = same
        elif relax is True or (relax and key in relax):
            relaxed.append(key)
        else:
            return None, ""
    if relaxed and len({tuple(str(r.get(k)) for k in match) for r in cand}) != 1:
        return None, "ambiguous: " + ", ".join(relaxed)
    return cand, ", ".join(f"{k}={cand[0].get(k)}" for k in relaxed)


def summarise_groups(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], *, baseline: str = "topk",
                     metrics: Sequence[str] = METRICS, tested: Sequence[str] | None = None,
                     match: Sequence[str] | None = None, relax: bool | Collection[str] = False,
                     baseline_rows: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The one summariser of recovery rows: ``status == "ok"`` recovery rows grouped by ``keys`` (sorted).

    Per group: the key values, ``runs`` (rows), ``seeds`` (distinct seeds), ``baseline differs``
    (``find_baseline``), ``stats`` (``{metric: {"mean", "se", "count"}}``, ``harness.recovery.metrics.mean_se``
    over the finite values) and ``tests`` (``{metric: paired_wilcoxon(...)}`` for the ``tested`` metrics,
    default all, over the seeds both the group and its baseline have, each seed's value the mean of its rows;
    empty for the baseline gate itself, without a baseline or without seeds). The baseline rows come from
    ``baseline_rows`` (default ``rows``) and share the framework and the ``match`` columns (default: ``keys`` but
    the gate and framework)."""
    ok = [r for r in rows if r.get("kind", "recovery") == "recovery" and r.get("status", "ok") == "ok"]
    pool = ok if baseline_rows is None else [r for r in baseline_rows if r.get("status", "ok") == "ok"]
    match = [k for k in keys if k not in ("gate", "framework")] if match is None else list(match)
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for row in ok:
        groups[tuple(row.get(k) for k in keys)].append(row)
    out = []
    for values in sorted(groups, key=lambda v: tuple(map(_order, v))):
        group = groups[values]
        base, differs = find_baseline(pool, group[0], match, baseline, relax)
        seeded = all("seed" in r for r in group)
        cell: dict[str, Any] = {**dict(zip(keys, values, strict=True)), "runs": len(group),
                                "seeds": len({r["seed"] for r in group}) if seeded else len(group),
                                "baseline differs": differs, "stats": {}, "tests": {}}
        for metric in metrics:
            mean, se, count = mean_se([_value(r, metric) for r in group])
            cell["stats"][metric] = {"mean": mean, "se": se, "count": count}
        if base and group[0].get("gate") != baseline and seeded and all("seed" in r for r in base):
            for metric in metrics if tested is None else tested:
                a, b = _per_seed(group, metric), _per_seed(base, metric)
                seeds = sorted(set(a) & set(b), key=_order)
                cell["tests"][metric] = paired_wilcoxon([a[s] for s in seeds], [b[s] for s in seeds])
        out.append(cell)
    return out


def summarise_rows(rows: Sequence[dict[str, Any]], baseline: str = "topk",
                   metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """Group ``status == "ok"`` recovery rows by problem; return, per problem, the cells (gate x framework) with
    ``mean``/``se``/``count`` of each metric and the Wilcoxon test of F1 against ``baseline``, and per gate the
    framework comparison of F1 (``summarise_groups`` by problem, gate and framework)."""
    rec = [{**r, "problem": str(r.get("problem", "default"))} for r in rows
           if r.get("kind") == "recovery" and r.get("status") == "ok"]
    rank = {(fw, gate): i for i, (fw, gate) in enumerate((f, g) for f in FRAMEWORKS for g in GATE_NAMES)}
    order = {problem: i for i, problem in reversed(list(enumerate(r["problem"] for r in rec)))}
    out: dict[str, Any] = {}
    for group in summarise_groups(rec, ("problem", "gate", "framework"), baseline=baseline, metrics=metrics,
                                  tested=("f1",)):
        if (group["framework"], group["gate"]) not in rank:
            continue
        runs = [r for r in rec if (r["problem"], r["gate"], r["framework"]) ==
                (group["problem"], group["gate"], group["framework"])]
        cell: dict[str, Any] = {"gate": group["gate"], "framework": group["framework"], "seeds": group["runs"],
                                "selection": runs[0].get("selection"), **group["stats"]}
        if "f1" in group["tests"]:
            cell["wilcoxon_f1_vs_" + baseline] = group["tests"]["f1"]
        part = out.setdefault(group["problem"], {"cells": [], "torch_vs_tf": [], "baseline": baseline})
        part["cells"].append(cell)
    out = dict(sorted(out.items(), key=lambda item: order[item[0]]))
    for problem, part in out.items():
        part["cells"].sort(key=lambda c: rank[(c["framework"], c["gate"])])
        part["torch_vs_tf"] = _framework_comparison([r for r in rec if r["problem"] == problem])
    return out


def _framework_comparison(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per gate run in both frameworks: F1 paired by seed (Wilcoxon) and the two distributions (Mann-Whitney)."""
    out = []
    for gate in GATE_NAMES:
        t = {r["seed"]: _value(r, "f1") for r in rows if r["gate"] == gate and r["framework"] == "torch"}
        f = {r["seed"]: _value(r, "f1") for r in rows if r["gate"] == gate and r["framework"] == "tf"}
        if not t or not f:
            continue
        seeds = sorted(set(t) & set(f))
        out.append({
            "gate": gate, "paired_seeds": len(seeds), "identical_f1_seeds": sum(t[s] == f[s] for s in seeds),
            "wilcoxon_f1": paired_wilcoxon([t[s] for s in seeds], [f[s] for s in seeds]),
            "mann_whitney_f1": mann_whitney(list(t.values()), list(f.values())),
        })
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
