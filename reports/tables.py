"""Tables of a report: timing ratios to a baseline gate, peak memory, recovery metrics, prediction accuracy.

Timing table: one row per case (gate x framework x implementation) within a *shape* (device, gating, batch,
input_dim, experts, k, dtype) and *mode*, compared with the baseline gate (default Top-k) in the same framework,
shape and mode by ``reports.comparison`` (its pairing and mark, with ``factor = 1``). Cases that a table sets
against each other are timed in interleaved rounds of one run, so when both rows have ``sample_rounds`` the
ratio is ``reports.comparison.per_round`` (median of the per-round ratios, an order-statistics interval across
rounds, and the interval decides: ``slower`` when it lies above 1); otherwise the ratio of medians with a
bootstrap interval over samples and the Mann-Whitney U test (``faster`` / ``slower`` when ``p < alpha``). The
``method`` column says which; ``n/a`` without samples or without a baseline. Rows are flagged ``noisy``
(``reports.rounds.noise_flags``) and ``inconsistent`` (``reports.rounds.inconsistent_pairs``: the forward alone
slower than forward and backward); a comparison with a flagged side shows ``not judged (noisy)`` / ``not judged
(inconsistent)`` instead of ``faster`` / ``slower``.

Recovery table: per gate x framework (x the other identifying columns), each metric's mean +- standard error
over seeds, and a two-sided Wilcoxon signed-rank test of the paired differences over the seeds shared with the
baseline gate: the one recovery summariser (``harness.recovery.report.summarise_groups``) that the
``gatebench recover`` / ``gatebench run`` summaries use, so the report and the CLI show the same p-values.

Prediction table (the digits benchmark, ``harness.prediction``): the test-split rows (``split == "test"``) per
problem, framework, gating and study, summarised by the benchmark's own verdict
(``harness.prediction.study.verdict``, the summariser behind ``gatebench predict``'s tables): per gate the test
accuracy (averaged over tasks, and per task) as mean +- s.e. over the held-out seeds, the experts it used, and the
paired two-sided Wilcoxon test of the averaged accuracy against the baseline gate on the same seeds, Holm-corrected
across the gates compared.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.recovery.report import summarise_groups  # NumPy / SciPy only: loads no framework

from .comparison import (
    BASELINE,
    DEFAULT_ALPHA,
    SAME,
    UNKNOWN,
    Pairing,
    judge,
    mann_whitney,
    no_test,
    per_round,
    sample_of,
)
from .load import NON_KEY_COLUMNS, RECOVERY_METRICS
from .rounds import FLAG_INCONSISTENT, inconsistent_pairs, noise_flags

# A timing shape: what must be equal for two cases to be compared.
SHAPE_KEYS: tuple[str, ...] = ("device", "gating", "batch", "input_dim", "experts", "k", "dtype")
CASE_KEYS: tuple[str, ...] = ("gate", "framework", "impl")
DEFAULT_BASELINE = "topk"
_MISSING = "-"
# Memory everywhere in the report: KiB (peak extra bytes of one call / 1024).
MEM_UNIT, MEM_SCALE = "KiB", 1024.0
RUN = "run"


def run_labels(frame: pd.DataFrame) -> pd.Series:
    """The run each row belongs to: its results file (the shortest path tail that tells the files apart), and the
    commit's first 7 digits when one file holds rows of several commits. Rows are compared only within a run."""
    if frame.empty:
        return pd.Series([], dtype=object, index=frame.index)
    sources = frame["source"].astype(object).where(frame["source"].notna(), "-").astype(str) \
        if "source" in frame else pd.Series("-", index=frame.index)
    names = _short_names(sorted(set(sources)))
    commits = frame["provenance"].map(lambda p: str(p.get("commit") or "")[:7] if isinstance(p, dict) else "") \
        if "provenance" in frame else pd.Series("", index=frame.index)
    several = commits.groupby(sources).nunique() > 1
    return pd.Series(
        [names[s] + (f"@{c}" if several.get(s, False) and c else "") for s, c in zip(sources, commits, strict=True)],
        index=frame.index, dtype=object)


def _short_names(paths: list[str]) -> dict[str, str]:
    """Each path's shortest tail (``a/b.jsonl`` -> ``b.jsonl``) that no other path shares."""
    parts = {p: p.replace("\\", "/").split("/") for p in paths}
    out = {}
    for path, segs in parts.items():
        for depth in range(1, len(segs) + 1):
            tail = "/".join(segs[-depth:])
            if all("/".join(o[-depth:]) != tail for q, o in parts.items() if q != path):
                break
        out[path] = tail
    return out


def duplicate_cases(frame: pd.DataFrame) -> list[str]:
    """One line per timing case id that appears more than once in one run (the last row is the one used)."""
    ok = frame[frame["kind"] == "timing"] if "kind" in frame else frame
    if ok.empty or "case_id" not in ok:
        return []
    counts = ok.assign(_run=run_labels(ok)).groupby(["_run", "case_id"], dropna=True).size()
    return [f"{cid} appears {n} times in {run} (the last row is used)" for (run, cid), n in counts.items() if n > 1]


def parse_baseline(baseline: str) -> tuple[str, str | None]:
    """``"gate"`` or ``"gate/impl"`` -> ``(gate, impl or None)``."""
    if not baseline or not isinstance(baseline, str):
        raise ValueError(
            f"baseline: expected a gate name such as 'topk' or 'dselect_k/bitwise'; got {baseline!r}"
        )
    gate, _, impl = baseline.partition("/")
    return gate, (impl or None)


def _keyed(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A copy whose key columns are plain objects with missing values as ``"-"`` (so groupby keeps them)."""
    out = frame.copy()
    for key in keys:
        if key not in out.columns:
            out[key] = _MISSING
        out[key] = out[key].astype(object).where(out[key].notna(), _MISSING)
    return out


_TIMING_COLUMNS: tuple[str, ...] = (
    RUN,
    *SHAPE_KEYS,
    "mode",
    *CASE_KEYS,
    "median_ms",
    "iqr_ms",
    "n_samples",
    "rounds",
    "baseline",
    "ratio",
    "ci_low",
    "ci_high",
    "p_value",
    "method",
    "mark",
    "flags",
    "peak_mem_bytes",
    "mem_ratio",
)


def timing_table(
    frame: pd.DataFrame,
    *,
    baseline: str = DEFAULT_BASELINE,
    alpha: float = DEFAULT_ALPHA,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """The timing comparison (see the module docstring): one row per ok timing case.

    Columns: ``run`` (``run_labels``: a case is compared only with the baseline of its own run), the shape keys,
    ``mode``, the case keys, ``median_ms``, ``iqr_ms``, ``n_samples``, ``rounds`` (the
    row's rounds, NaN without ``sample_rounds``), ``baseline``, ``ratio``, ``ci_low``, ``ci_high``, ``p_value``
    (NaN for per-round ratios: the interval decides), ``method``, ``mark``, ``flags`` (the row's and its
    baseline's, ``"noisy, inconsistent"``), ``peak_mem_bytes``, ``mem_ratio``.
    A case whose baseline is missing in its framework, shape and mode has NaN ratio and mark ``n/a``.
    """
    base_gate, base_impl = parse_baseline(baseline)
    ok = frame[(frame["kind"] == "timing") & (frame["status"] == "ok")]
    columns = list(_TIMING_COLUMNS)
    if ok.empty:
        return pd.DataFrame(columns=columns)
    ok = _keyed(ok, [*SHAPE_KEYS, "mode", *CASE_KEYS]).assign(**{RUN: run_labels(ok)})
    rows = [row for _, row in ok.iterrows()]
    pairing = Pairing(rows, (RUN, *SHAPE_KEYS, "mode", *CASE_KEYS), {"gate": base_gate}, pinned_impl=base_impl)
    inconsistent = inconsistent_pairs(rows)
    out_rows = []
    for row in rows:
        rec = {key: row[key] for key in columns if key in row.index and key not in ("baseline", "rounds", "flags")}
        rec["rounds"] = _n_rounds(row)
        rec.update(_timing_versus(row, pairing, baseline, inconsistent, alpha=alpha, level=level, n_boot=n_boot,
                                  seed=seed))
        out_rows.append(rec)
    return _ordered(pd.DataFrame(out_rows, columns=columns), base_gate)


def _n_rounds(row: pd.Series) -> float:
    rounds = sample_of(row).rounds
    return float(np.unique(rounds).size) if rounds is not None else float("nan")


def _flags(row: pd.Series, inconsistent: set[str]) -> list[str]:
    """The row's flags: ``noisy`` (``noise_flags``) and ``inconsistent`` (in ``inconsistent``)."""
    return noise_flags(row) + ([FLAG_INCONSISTENT] if str(row.get("case_id")) in inconsistent else [])


def _timing_versus(row: pd.Series, pairing: Pairing, baseline: str, inconsistent: set[str], **how) -> dict:
    """The comparison columns of one timing row against its baseline row (``reports.comparison``): per-round
    ratios when both rows have round indices, else the ratio of medians and the Mann-Whitney test."""
    base = pairing.baseline_of(row)
    nan = float("nan")
    own = _flags(row, inconsistent)
    if base is None:
        return dict(baseline=f"{baseline} (missing)", ratio=nan, ci_low=nan, ci_high=nan, p_value=nan, method="",
                    mark=UNKNOWN, flags=", ".join(own), mem_ratio=nan)
    mem_ratio = _safe_div(row.get("peak_mem_bytes"), base.get("peak_mem_bytes"))
    if base is row:  # the baseline itself: ratio 1 by definition, nothing to test
        return dict(baseline=_label(base), ratio=1.0, ci_low=nan, ci_high=nan, p_value=nan, method="",
                    mark=BASELINE, flags=", ".join(own), mem_ratio=mem_ratio)
    case, ref = sample_of(row), sample_of(base)
    flags = list(dict.fromkeys(own + _flags(base, inconsistent)))
    rounds = case.rounds is not None and ref.rounds is not None
    got = judge(case, ref, statistic=per_round, test=no_test if rounds else mann_whitney, flags=flags, **how)
    return dict(baseline=_label(base), ratio=got.ratio, ci_low=got.ci_low, ci_high=got.ci_high,
                p_value=got.p_value, method=got.method, mark=got.mark, flags=", ".join(flags), mem_ratio=mem_ratio)


def _ordered(table: pd.DataFrame, base_gate: str) -> pd.DataFrame:
    """Within a shape and mode: PyTorch then TF, the baseline first, then the gates in their usual order."""
    gates = dict.fromkeys((base_gate, "softmax", "topk", "dselect_k", "hard_concrete"))
    gate_rank = {g: i for i, g in enumerate(gates)}
    order = table.assign(
        _fw=table["framework"].map({"torch": 0, "tf": 1}).fillna(2),
        _gate=table["gate"].map(gate_rank).fillna(len(gate_rank)),
    )
    order = order.sort_values([*SHAPE_KEYS, "mode", "_fw", "_gate", "impl", RUN], kind="stable", key=_sort_key)
    return table.loc[order.index].reset_index(drop=True)


def _sort_key(col: pd.Series) -> pd.Series:
    """Sort numbers as numbers and everything else as text (key columns mix numbers and ``"-"``)."""
    if col.name in ("_fw", "_gate"):
        return col
    numeric = pd.to_numeric(col, errors="coerce")
    return numeric.fillna(-1) if numeric.notna().any() else col.astype(str)


def _label(row: pd.Series) -> str:
    impl = row.get("impl")
    return str(row["gate"]) if impl in (None, _MISSING) or pd.isna(impl) else f"{row['gate']}/{impl}"


def _safe_div(a: object, b: object) -> float:
    try:
        a_f, b_f = float(a), float(b)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return a_f / b_f if np.isfinite(a_f) and np.isfinite(b_f) and b_f != 0 else float("nan")


def memory_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Peak memory (KiB, ``MEM_UNIT``) per case, one column per framework, rows gate x impl within each shape and
    mode (the median over runs when several runs hold the case)."""
    ok = frame[(frame["kind"] == "timing") & (frame["status"] == "ok") & frame["peak_mem_bytes"].notna()]
    if ok.empty:
        return pd.DataFrame()
    ok = _keyed(ok, [*SHAPE_KEYS, "mode", *CASE_KEYS])
    ok = ok.assign(peak_mem=ok["peak_mem_bytes"].astype(float) / MEM_SCALE)
    return ok.pivot_table(
        index=[*SHAPE_KEYS, "mode", "gate", "impl"],
        columns="framework",
        values="peak_mem",
        aggfunc="median",
    )


def _case_id_names(case_id: object) -> list[str]:
    """The parameter names of a ``harness.results.case_id`` string (``"a=1,b=x"`` -> ``["a", "b"]``)."""
    if not isinstance(case_id, str):
        return []
    return [token.split("=", 1)[0] for token in case_id.split(",") if "=" in token]


def recovery_keys(frame: pd.DataFrame) -> list[str]:
    """The identifying columns of recovery rows, seed excepted: the case's parameters, read from the rows'
    ``case_id`` (every problem knob, floats such as ``lr`` included). Rows without a case id fall back to the
    non-float columns that are neither metrics nor bookkeeping."""
    rec = frame[frame["kind"] == "recovery"].dropna(axis=1, how="all")
    named: dict[str, None] = {}
    for cid in rec.get("case_id", pd.Series(dtype=object)):
        for name in _case_id_names(cid):
            named.setdefault(name, None)
    keys = [name for name in named if name in rec.columns and name != "seed"]
    if not keys:
        for col in rec.columns:
            if col in NON_KEY_COLUMNS or col in RECOVERY_METRICS or col == "seed":
                continue
            values = rec[col]
            if values.map(lambda v: isinstance(v, (list, dict))).any():
                continue
            if pd.api.types.is_float_dtype(values):
                continue  # measured values (losses, times) are not identifiers
            keys.append(col)
    for first in ("problem", "framework", "gate"):  # gate, framework, problem first
        if first in keys:
            keys.remove(first)
            keys.insert(0, first)
    return keys


def recovery_metrics(frame: pd.DataFrame) -> list[str]:
    rec = frame[frame["kind"] == "recovery"]
    return [m for m in RECOVERY_METRICS if m in rec.columns and rec[m].notna().any()]


def recovery_table(
    frame: pd.DataFrame, *, baseline: str = DEFAULT_BASELINE, alpha: float = DEFAULT_ALPHA
) -> pd.DataFrame:
    """Mean +- s.e. of each recovery metric per configuration, with a paired Wilcoxon test against the baseline.

    The rows are summarised by ``harness.recovery.report.summarise_groups`` (the summariser of ``gatebench
    recover`` / ``run``): the baseline rows share the framework and every other case parameter, relaxed where the
    baseline lacks a value (``find_baseline``; ``baseline differs`` names the baseline's settings that are not
    the row's). For each metric ``m``
    the columns are ``m_mean``, ``m_se`` (``mean_se`` over the finite values), ``m_diff`` (median over the
    seeds both have of ``d = m(case) - m(baseline)``, pairs with a missing value left out), ``m_p`` (two-sided
    Wilcoxon signed-rank p-value of ``d``, ``paired_wilcoxon``; 1.0 when every ``d`` is 0) and ``m_mark``
    (``better`` / ``worse`` when ``p < alpha``, ``not significant`` otherwise; for ``f1``, ``precision``,
    ``recall``, ``exact_support_rate`` larger is better, for ``support_changes``, ``steps_to_support``,
    ``test_mse``, ``final_loss`` smaller is, for the rest the mark says ``higher`` / ``lower``).

    With few seeds the test cannot reach a small p: with ``n`` pairs the smallest two-sided p-value is
    ``2 / 2**n`` (0.0625 for 5 pairs, 0.125 for 4), so with 5 seeds or fewer no row is marked at ``alpha =
    0.05``, however large and consistent the difference; ``m_diff`` still shows it.
    """
    base_gate, _ = parse_baseline(baseline)
    rec = frame[(frame["kind"] == "recovery") & (frame["status"] == "ok")]
    metrics = recovery_metrics(frame)
    if rec.empty or not metrics:
        return pd.DataFrame()
    keys = recovery_keys(frame)
    records = _keyed(rec, keys).to_dict("records")
    out_rows: list[dict] = []
    for group in summarise_groups(records, keys, baseline=base_gate, metrics=metrics, relax=True):
        row: dict = {key: group[key] for key in keys}
        row["seeds"], row["baseline differs"] = group["seeds"], group["baseline differs"]
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_se"] = group["stats"][m]["mean"], group["stats"][m]["se"]
            test = group["tests"].get(m)
            if test is None:
                row[f"{m}_diff"], row[f"{m}_p"] = np.nan, np.nan
                row[f"{m}_mark"] = "baseline" if group["gate"] == base_gate else UNKNOWN
                continue
            row[f"{m}_diff"], row[f"{m}_p"] = test["median_diff"], test["p_value"]
            row[f"{m}_mark"] = _recovery_mark(m, test["median_diff"], test["p_value"], alpha)
        out_rows.append(row)
    return pd.DataFrame(out_rows)


_HIGHER_IS_BETTER = frozenset({"f1", "precision", "recall", "exact_support_rate", "acc"})
_LOWER_IS_BETTER = frozenset({"test_mse", "final_loss", "steps_to_support", "support_changes"})


def _recovery_mark(metric: str, diff: float, p: float, alpha: float) -> str:
    """Mark of a paired comparison: significant when ``p < alpha`` (``p`` of the Wilcoxon test), its direction
    the sign of ``diff`` (the median paired difference); ``not significant`` otherwise, ``n/a`` without ``p``."""
    if not np.isfinite(p):
        return UNKNOWN
    if p >= alpha or diff == 0:
        return SAME
    if metric in _HIGHER_IS_BETTER:
        return "better" if diff > 0 else "worse"
    if metric in _LOWER_IS_BETTER:
        return "better" if diff < 0 else "worse"
    return "higher" if diff > 0 else "lower"


PREDICTION_KEYS: tuple[str, ...] = ("problem", "framework", "gating", "study")


def _prediction_tasks(part: pd.DataFrame) -> list[str]:
    named = part["tasks"].dropna().astype(str) if "tasks" in part else pd.Series(dtype=str)
    return [t for t in (named.iloc[0] if len(named) else "").split(",") if t]


def _prediction_records(frame: pd.DataFrame) -> pd.DataFrame:
    """The ok test-split prediction rows, the newest of each case (a rerun replaces a run)."""
    if "kind" not in frame or "split" not in frame:
        return frame.iloc[0:0]
    rows = frame[(frame["kind"] == "prediction") & (frame["status"] == "ok") & (frame["split"] == "test")]
    rows = rows.drop_duplicates("case_id", keep="last") if "case_id" in rows else rows
    return rows.dropna(axis=1, how="all")


def _prediction_cells(gate: str, info: dict, tasks: list[str], base_gate: str, alpha: float) -> dict:
    s = info["summary"]
    row: dict = {"gate": gate, "seeds": s["acc_mean"]["count"]}
    for metric in ("acc_mean", *(f"acc_{t}" for t in tasks), "nnz_mean",
                   *(f"{m}_{t}" for m in ("nnz", "used") for t in tasks)):
        row[f"{metric}_mean"], row[f"{metric}_se"] = s[metric]["mean"], s[metric]["se"]
    test = info["tests"].get("acc_mean")
    if test is None:
        row.update(acc_diff=np.nan, acc_p=np.nan, acc_p_holm=np.nan,
                   acc_mark="baseline" if gate == base_gate else UNKNOWN)
    else:
        row.update(acc_diff=test["median_diff"], acc_p=test["p_value"], acc_p_holm=test["p_holm"],
                   acc_mark=_recovery_mark("acc", test["median_diff"], test["p_holm"], alpha))
    return row


def prediction_table(
    frame: pd.DataFrame, *, baseline: str = DEFAULT_BASELINE, alpha: float = DEFAULT_ALPHA
) -> pd.DataFrame:
    """Per problem, framework, gating, study and gate (see the module docstring): ``seeds``, ``<m>_mean`` and
    ``<m>_se`` of ``acc_mean`` (test accuracy averaged over tasks), ``acc_<task>``, ``nnz_mean``, ``nnz_<task>``
    and ``used_<task>``; ``acc_diff`` (median paired difference of ``acc_mean`` against the baseline), ``acc_p``
    (two-sided Wilcoxon p), ``acc_p_holm`` (Holm across the gates of the group) and ``acc_mark`` (``better`` /
    ``worse`` when the Holm p is below ``alpha``). Empty without test-split prediction rows."""
    from harness.prediction.study import verdict  # NumPy / SciPy only: loads no framework

    base_gate, _ = parse_baseline(baseline)
    rows = _prediction_records(frame)
    if rows.empty or "acc_mean" not in rows:
        return pd.DataFrame()
    keys = [k for k in PREDICTION_KEYS if k in rows]
    out: list[dict] = []
    for values, part in rows.groupby(keys, sort=True, dropna=False):
        tasks = _prediction_tasks(part)
        runs = {str(g): grp.to_dict("records") for g, grp in
                sorted(part.groupby("gate"), key=lambda kv: _gate_order(kv[0]))}
        judged = verdict(runs, base_gate if base_gate in runs else next(iter(runs)), tasks)
        for gate, info in judged["gates"].items():
            if base_gate not in runs:
                info = {**info, "tests": {}}
            head = dict(zip(keys, values if isinstance(values, tuple) else (values,), strict=True))
            out.append({**head, "tasks": ",".join(tasks), **_prediction_cells(gate, info, tasks, base_gate, alpha)})
    return pd.DataFrame(out)


def _gate_order(gate: object) -> tuple:
    from gates import GATE_NAMES

    name = str(gate)
    return (GATE_NAMES.index(name) if name in GATE_NAMES else len(GATE_NAMES), name)


def format_prediction(table: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """The prediction table as text: keys, seeds, ``test acc`` (mean ± s.e.), one column per task, experts used
    (non-zero weights per task / experts with any weight), and ``acc vs <baseline>`` (median paired difference,
    Wilcoxon p, Holm p, mark)."""
    if table.empty:
        return table
    several = table.groupby(["problem", "framework", "gating"])["study"].nunique().max() > 1
    keys = ["problem", "framework", "gating", *(["study"] if several else []), "gate", "seeds"]
    out = table[[k for k in keys if k in table]].copy()
    out["test acc"] = [_fmt_mean_se(m, e) for m, e in zip(table["acc_mean_mean"], table["acc_mean_se"], strict=True)]
    tasks = [t for t in str(table["tasks"].iloc[0]).split(",") if t]
    for t in tasks:
        out[f"acc {t}"] = [_fmt_mean_se(m, e) for m, e in zip(table[f"acc_{t}_mean"], table[f"acc_{t}_se"],
                                                               strict=True)]
    out["nnz per task"] = [" / ".join(f"{r[f'nnz_{t}_mean']:.2f}" for t in tasks) for _, r in table.iterrows()]
    out["experts used"] = [" / ".join(f"{r[f'used_{t}_mean']:.1f}" for t in tasks) for _, r in table.iterrows()]
    out[f"acc vs {baseline} (Holm)"] = [
        "baseline" if mk == "baseline" else (mk if not np.isfinite(d) else f"{d:+.3f} (p={p:.2g}, Holm {h:.2g}, {mk})")
        for d, p, h, mk in zip(table["acc_diff"], table["acc_p"], table["acc_p_holm"], table["acc_mark"],
                               strict=True)]
    return out


# ------------------------------------------------------------------------------------------------------------
# Formatting for HTML / Markdown.
# ------------------------------------------------------------------------------------------------------------
def format_timing(table: pd.DataFrame) -> pd.DataFrame:
    """Readable columns: ``ratio [lo, hi]`` and the mark, times to 4 significant digits."""
    if table.empty:
        return table
    out = table.copy()
    out["median_ms"] = out["median_ms"].map(lambda v: f"{v:.4g}" if pd.notna(v) else "")
    out["ratio (95% CI)"] = [
        _fmt_ratio(r, lo, hi) for r, lo, hi in zip(out["ratio"], out["ci_low"], out["ci_high"], strict=True)
    ]
    out["p"] = out["p_value"].map(lambda v: f"{v:.2g}" if pd.notna(v) else "")
    out[f"peak {MEM_UNIT}"] = out["peak_mem_bytes"].map(lambda v: f"{v / MEM_SCALE:.3g}" if pd.notna(v) else "")
    out["memory ratio"] = out["mem_ratio"].map(lambda v: f"{v:.2f}" if pd.notna(v) else "")
    out["IQR"] = [f"{i / m:.0%}" if pd.notna(i) and pd.notna(m) and m > 0 else ""
                  for i, m in zip(table["iqr_ms"], table["median_ms"], strict=True)]
    out["n"] = out["n_samples"].map(lambda v: f"{v:.0f}" if pd.notna(v) else "")
    out["rounds"] = out["rounds"].map(lambda v: f"{v:.0f}" if pd.notna(v) else "")
    keep = [
        *([RUN] if RUN in table and table[RUN].nunique() > 1 else []),
        *SHAPE_KEYS,
        "mode",
        *CASE_KEYS,
        "median_ms",
        "IQR",
        "n",
        "rounds",
        "baseline",
        "ratio (95% CI)",
        "method",
        "p",
        "mark",
        "flags",
        f"peak {MEM_UNIT}",
        "memory ratio",
    ]
    return out[keep]


def _fmt_ratio(r: float, lo: float, hi: float) -> str:
    if not np.isfinite(r):
        return ""
    if np.isfinite(lo) and np.isfinite(hi):
        return f"{r:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{r:.3f}"


def format_recovery(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """``mean +- se`` strings and ``median paired diff (Wilcoxon p, mark)`` per metric."""
    if table.empty:
        return table
    key_cols = [c for c in table.columns if not any(c.startswith(f"{m}_") for m in metrics)]
    # Columns equal in every row (the problem's fixed knobs) say nothing in the table: keep those that vary.
    always = {"gate", "framework", "problem", "seeds"}
    key_cols = [c for c in key_cols if c in always or table[c].astype(str).nunique() > 1]
    out = table[key_cols].copy()
    for m in metrics:
        out[m] = [_fmt_mean_se(a, b) for a, b in zip(table[f"{m}_mean"], table[f"{m}_se"], strict=True)]
        out[f"{m} vs baseline"] = [
            _fmt_paired(d, p, mk)
            for d, p, mk in zip(table[f"{m}_diff"], table[f"{m}_p"], table[f"{m}_mark"], strict=True)
        ]
    return out


# The recovery metrics the report's main recovery table shows (the rest are in the full table).
HEADLINE_METRICS: tuple[str, ...] = ("f1", "exact_support_rate", "support_changes", "test_mse")
_METRIC_LABELS = {"f1": "F1", "exact_support_rate": "exact support rate", "support_changes": "support changes",
                  "test_mse": "test MSE", "steps_to_support": "steps to support", "final_loss": "final loss"}


def metric_label(metric: str) -> str:
    """A recovery metric's name as a reader reads it (``exact_support_rate`` -> ``exact support rate``)."""
    return _METRIC_LABELS.get(metric, metric.replace("_", " "))


def format_recovery_compact(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The recovery table in few columns: the varying keys, seeds, and one cell per metric of
    ``HEADLINE_METRICS``: ``mean ± se`` then the paired difference against the baseline (Wilcoxon p, mark)."""
    full = format_recovery(table, metrics)
    if full.empty:
        return full
    shown = [m for m in HEADLINE_METRICS if m in metrics] or list(metrics)[:4]
    keys = [c for c in full.columns if c not in metrics and not c.endswith(" vs baseline")]
    keys = [c for c in keys if c != "baseline differs" or (full[c].astype(str) != "").any()]
    out = full[keys].copy()
    for m in shown:
        out[metric_label(m)] = [_fmt_compact(*vals) for vals in zip(table[f"{m}_mean"], table[f"{m}_se"],
                                                                    table[f"{m}_diff"], table[f"{m}_p"],
                                                                    table[f"{m}_mark"], strict=True)]
    return out


def _fmt_compact(mean: float, se: float, diff: float, p: float, mk: str) -> str:
    """``0.979 ± 0.021 (+0.125, p=0.25)``; the mark only when it is one (``better``, ``worse``, ...)."""
    text = _fmt_mean_se(mean, se)
    if mk == "baseline" or not np.isfinite(diff):
        return text
    said = "" if mk in (SAME, UNKNOWN) else f", {mk}"
    return f"{text} ({diff:+.3f}, p={p:.2g}{said})" if np.isfinite(p) else f"{text} ({diff:+.3f}{said})"


def _fmt_mean_se(mean: float, se: float) -> str:
    if not np.isfinite(mean):
        return ""
    return f"{mean:.3f} ± {se:.3f}" if np.isfinite(se) else f"{mean:.3f}"


def _fmt_paired(diff: float, p: float, mk: str) -> str:
    if mk == "baseline":
        return "baseline"
    if not np.isfinite(diff):
        return mk
    return f"{diff:+.3f} (p={p:.2g}, {mk})" if np.isfinite(p) else f"{diff:+.3f} ({mk})"


__all__ = [
    "DEFAULT_BASELINE",
    "SHAPE_KEYS",
    "CASE_KEYS",
    "timing_table",
    "memory_table",
    "recovery_table",
    "prediction_table",
    "format_prediction",
    "PREDICTION_KEYS",
    "recovery_keys",
    "recovery_metrics",
    "format_timing",
    "format_recovery",
    "format_recovery_compact",
    "metric_label",
    "run_labels",
    "duplicate_cases",
    "MEM_UNIT",
    "parse_baseline",
    "SAME",
]
