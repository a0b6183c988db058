"""The report's headline: the answers first, in sentences, with one figure per question and the caveats.

Per framework and device, two questions:

- *What does each gate cost against the baseline (Top-k)?* From ``reports.tables.timing_table``: the
  forward-and-backward ratio (``fwdbwd``; another mode when there is none) with its 95% interval, and the peak
  memory ratio, at the shape most of the rows were timed at (per-example gating first). Figure ``headline_cost``.
- *How well does each gate find the planted experts?* From ``reports.tables.recovery_table``: F1 (mean over
  seeds with a t interval) and the paired Wilcoxon test against the baseline. Figure ``recovery_f1``.
- *How well does each gate predict on real data?* From ``reports.tables.prediction_table`` (the digits
  benchmark's test split), per framework and gating: test accuracy (mean over held-out seeds with a t interval)
  and the paired Wilcoxon test against the baseline, Holm-corrected across the gates. Figure
  ``prediction_accuracy``.

``caveats`` are computed from the rows: too few seeds for the paired test to reach 0.05 (with ``n`` seeds the
smallest two-sided Wilcoxon p is ``2 / 2**n``: 0.25 for 3), timing rows with fewer than ``MIN_SAMPLES`` samples,
rows flagged noisy or inconsistent (``reports.rounds``), provenance that differs between rows (another machine,
CPU or version), several runs of one suite merged, and case ids that repeat within a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .plots import FRAMEWORK_NAMES, MODE_NAMES, Figure, _gate_key, _png, _setup, log_ticks
from .tables import SHAPE_KEYS, duplicate_cases, run_labels

MIN_SAMPLES = 20
ALPHA = 0.05
# Provenance keys that must agree for rows to be compared as they are (the commit and time may differ).
PROVENANCE_KEYS: tuple[str, ...] = ("machine", "cpu", "cpu_count", "platform", "python", "numpy", "torch",
                                    "tensorflow", "gpu")


@dataclass
class Headline:
    cost: list[str] = field(default_factory=list)  # one sentence per framework and device
    recovery: list[str] = field(default_factory=list)  # one sentence per framework (and problem)
    caveats: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    prediction: list[str] = field(default_factory=list)  # one sentence per framework and gating (and problem)

    @property
    def sentences(self) -> list[str]:
        return self.cost + self.recovery + self.prediction


def _fmt_x(value: float) -> str:
    return f"{value:.2f}x" if np.isfinite(value) else "n/a"


def _ci(lo: float, hi: float) -> str:
    return f" (95% CI {lo:.2f}-{hi:.2f})" if np.isfinite(lo) and np.isfinite(hi) else " (no interval)"


def _where(device: str, framework: str) -> str:
    return f"{FRAMEWORK_NAMES.get(framework, framework)} on {str(device).upper()}"


def headline_rows(timing: pd.DataFrame) -> pd.DataFrame:
    """The timing-table rows the cost sentence reads: per framework and device, mode ``fwdbwd`` (else the most
    common mode), per-example gating when there is any, at the most common shape that holds a baseline, the
    first run; one row per gate (its ``eager`` implementation when it has several)."""
    if timing.empty:
        return timing
    picked = []
    for _, part in sorted(timing.groupby(["framework", "device"]), key=lambda kv: _fw_key(kv[0][0])):
        mode = "fwdbwd" if (part["mode"] == "fwdbwd").any() else part["mode"].mode().iloc[0]
        part = part[part["mode"] == mode]
        if (part["gating"] == "per_example").any():
            part = part[part["gating"] == "per_example"]
        part = part[part["run"] == part["run"].iloc[0]]
        with_base = part[part["mark"] == "baseline"]
        shapes = (with_base if len(with_base) else part)[list(SHAPE_KEYS)].astype(str).agg("|".join, axis=1)
        shape = shapes.mode().iloc[0]
        part = part[part[list(SHAPE_KEYS)].astype(str).agg("|".join, axis=1) == shape]
        part = part.assign(_eager=(part["impl"] != "eager")).sort_values(["_eager"], kind="stable")
        picked.append(part.drop_duplicates("gate").drop(columns="_eager"))
    return pd.concat(picked, ignore_index=True)


def _fw_key(framework: object) -> tuple:
    return ({"torch": 0, "tf": 1}.get(str(framework), 2), str(framework))


def _shape_words(row: pd.Series) -> str:
    bits = [MODE_NAMES.get(str(row["mode"]), str(row["mode"])), str(row["gating"]).replace("_", "-")]
    for key, word in (("batch", "batch"), ("input_dim", "input dim"), ("experts", "experts"), ("k", "k")):
        if str(row[key]) not in ("-", "None", "nan", "<NA>"):
            bits.append(f"{word} {row[key]}")
    return ", ".join(bits)


def cost_sentences(timing: pd.DataFrame, baseline: str) -> list[str]:
    """One sentence per framework and device: each gate's time ratio (95% CI) and memory ratio to ``baseline``."""
    rows = headline_rows(timing)
    out = []
    for (framework, device), part in rows.groupby(["framework", "device"], sort=False):
        others = part[part["mark"] != "baseline"].sort_values("gate", key=lambda s: s.map(_gate_key))
        where = f"{_where(device, framework)} ({_shape_words(part.iloc[0])})"
        if not (part["mark"] == "baseline").any():
            out.append(f"{where}: no {baseline} row to compare with.")
            continue
        if others.empty:
            continue
        bits = []
        for _, r in others.iterrows():
            mem = f", memory {_fmt_x(r['mem_ratio'])}" if np.isfinite(r["mem_ratio"]) else ""
            bits.append(f"{r['gate']} takes {_fmt_x(r['ratio'])} the time{_ci(r['ci_low'], r['ci_high'])}"
                        f"{mem} [{r['mark']}]")
        out.append(f"{where}, against {baseline}: " + "; ".join(bits) + ".")
    return out


def _t_interval(mean: float, se: float, n: int) -> tuple[float, float]:
    from scipy import stats

    if not (np.isfinite(mean) and np.isfinite(se)) or n < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return mean - half, mean + half


def recovery_sentences(recovery: pd.DataFrame, baseline: str) -> list[str]:
    """One sentence per framework (and problem): each gate's F1 with its 95% interval, and the paired test."""
    if recovery.empty or "f1_mean" not in recovery:
        return []
    group_by = ["framework"] + (["problem"] if "problem" in recovery and recovery["problem"].nunique() > 1 else [])
    out = []
    for keys, part in sorted(recovery.groupby(group_by), key=lambda kv: _fw_key(kv[0][0])):
        keys = keys if isinstance(keys, tuple) else (keys,)
        where = FRAMEWORK_NAMES.get(str(keys[0]), str(keys[0])) + (f", problem {keys[1]}" if len(keys) > 1 else "")
        part = part.sort_values("gate", key=lambda s: s.map(_gate_key))
        bits = []
        for _, r in part.iterrows():
            lo, hi = np.clip(_t_interval(r["f1_mean"], r["f1_se"], int(r["seeds"])), 0.0, 1.0)  # F1 is in [0, 1]
            text = f"{r['gate']} F1 {r['f1_mean']:.2f}{_ci(lo, hi)}"
            if r["gate"] != baseline and np.isfinite(r.get("f1_p", np.nan)):
                text += f", {r['f1_diff']:+.2f} vs {baseline} (Wilcoxon p = {r['f1_p']:.2g}, {r['f1_mark']})"
            bits.append(text)
        seeds = int(part["seeds"].min())
        out.append(f"{where}, finding the planted experts ({seeds} seeds): " + "; ".join(bits) + ".")
    return out


def prediction_sentences(prediction: pd.DataFrame, baseline: str) -> list[str]:
    """One sentence per framework and gating (and problem): each gate's test accuracy with its 95% interval, and
    the paired Wilcoxon test against ``baseline`` (Holm-corrected across the gates)."""
    if prediction.empty or "acc_mean_mean" not in prediction:
        return []
    group_by = ["framework", "gating"] + (["problem"] if prediction["problem"].nunique() > 1 else [])
    out = []
    for keys, part in sorted(prediction.groupby(group_by), key=lambda kv: (_fw_key(kv[0][0]), str(kv[0][1:]))):
        where = f"{FRAMEWORK_NAMES.get(str(keys[0]), str(keys[0]))}, {str(keys[1]).replace('_', '-')} gating" + (
            f", problem {keys[2]}" if len(keys) > 2 else "")
        bits = []
        for _, r in part.sort_values("gate", key=lambda s: s.map(_gate_key)).iterrows():
            lo, hi = np.clip(_t_interval(r["acc_mean_mean"], r["acc_mean_se"], int(r["seeds"])), 0.0, 1.0)
            text = f"{r['gate']} {r['acc_mean_mean']:.3f}{_ci(lo, hi)}"
            if r["gate"] != baseline and np.isfinite(r.get("acc_p", np.nan)):
                text += (f", {r['acc_diff']:+.3f} vs {baseline} (Wilcoxon p = {r['acc_p']:.2g}, Holm "
                         f"{r['acc_p_holm']:.2g}, {r['acc_mark']})")
            bits.append(text)
        out.append(f"{where}, test accuracy of each gate against {baseline} on the digits benchmark "
                   f"({int(part['seeds'].min())} held-out seeds): " + "; ".join(bits) + ".")
    return out


def _too_few_seeds(table: pd.DataFrame, p_column: str, seeds_word: str, what: str) -> list[str]:
    """The caveat when the fewest seeds of the tested rows of ``table`` cannot give a two-sided Wilcoxon p below
    ``ALPHA`` (its smallest p is ``2 / 2**n``), else none."""
    if table.empty or "seeds" not in table or p_column not in table:
        return []
    tested = table[table[p_column].notna()]
    if tested.empty:
        return []
    n = int(tested["seeds"].min())
    smallest = 2.0 / 2**n
    if smallest < ALPHA:
        return []
    return [f"Too few {seeds_word} for significance: with {n} seeds the smallest two-sided Wilcoxon p is "
            f"{smallest:.3g}, so no {what} difference can reach p < {ALPHA}; run 6 or more seeds."]


def _prediction_seeds_caveat(prediction: pd.DataFrame) -> list[str]:
    return _too_few_seeds(prediction, "acc_p", "held-out seeds", "prediction")


def _seeds_caveat(recovery: pd.DataFrame) -> list[str]:
    return _too_few_seeds(recovery, "f1_p", "seeds", "recovery")


def _samples_caveat(timing: pd.DataFrame) -> list[str]:
    if timing.empty:
        return []
    few = timing[pd.to_numeric(timing["n_samples"], errors="coerce") < MIN_SAMPLES]
    if few.empty:
        return []
    least = int(pd.to_numeric(few["n_samples"]).min())
    return [f"{len(few)} timing row(s) have fewer than {MIN_SAMPLES} samples (the fewest: {least}): their "
            "intervals are wide and their tests weak."]


def _flags_caveat(timing: pd.DataFrame) -> list[str]:
    if timing.empty:
        return []
    out = []
    for flag, what in (("noisy", "IQR over 10% of the median or the machine loaded"),
                       ("inconsistent", "the forward alone slower than forward and backward")):
        hit = timing[timing["flags"].astype(str).str.contains(flag)]
        if len(hit):
            out.append(f"{len(hit)} timing comparison(s) have a {flag} side ({what}): they are not judged.")
    return out


def _provenance_caveat(frame: pd.DataFrame) -> list[str]:
    if "provenance" not in frame:
        return []
    values: dict[str, set[str]] = {}
    for prov in frame["provenance"]:
        if isinstance(prov, dict):
            for key in PROVENANCE_KEYS:
                if prov.get(key) is not None:
                    values.setdefault(key, set()).add(str(prov[key]))
    mixed = {k: sorted(v) for k, v in values.items() if len(v) > 1}
    if not mixed:
        return []
    what = "; ".join(f"{k}: {', '.join(v)}" for k, v in mixed.items())
    return [f"Mixed provenance: the rows were measured on different machines or versions ({what})."]


def _runs_caveat(frame: pd.DataFrame) -> list[str]:
    if frame.empty or "suite" not in frame:
        return []
    runs = frame.assign(_run=run_labels(frame)).groupby(frame["suite"].astype(str))["_run"].unique()
    out = [f"Several runs merged: suite {suite} has rows from {len(r)} runs ({', '.join(map(str, r))}); each case "
           "is compared only with the baseline of its own run." for suite, r in runs.items() if len(r) > 1]
    dups = duplicate_cases(frame)
    if dups:
        out.append(f"{len(dups)} case id(s) repeat within a run: " + "; ".join(dups[:3])
                   + ("; ..." if len(dups) > 3 else "") + ".")
    return out


def caveats(frame: pd.DataFrame, timing: pd.DataFrame, recovery: pd.DataFrame) -> list[str]:
    """What limits the headline, each computed from the rows (see the module docstring)."""
    return (_seeds_caveat(recovery) + _samples_caveat(timing) + _flags_caveat(timing)
            + _provenance_caveat(frame) + _runs_caveat(frame))


def _ratio_panel(ax, part: pd.DataFrame, col: str, what: str, baseline: str) -> None:
    """One panel of the cost figure: ``col`` (``ratio`` with its interval, or ``mem_ratio``) per gate."""
    y = np.arange(len(part))
    values = part[col].astype(float).to_numpy()
    ax.set_yticks(y, part["gate"].astype(str))
    ax.set_ylim(-0.6, len(part) - 0.4)
    ax.set_xlabel(f"{what} / {baseline} (log scale; 1 = same)")
    if not np.isfinite(values).any():
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="#777")
        ax.set_xticks([])
        return
    if col == "ratio":
        lo, hi = part["ci_low"].astype(float).to_numpy(), part["ci_high"].astype(float).to_numpy()
        err = np.vstack([np.where(np.isfinite(lo), values - lo, 0), np.where(np.isfinite(hi), hi - values, 0)])
        ax.errorbar(values, y, xerr=np.clip(err, 0, None), fmt="o", capsize=3, color="#0173b2")
    else:
        ax.plot(values, y, "s", color="#de8f05")
    ax.axvline(1.0, color="#555", lw=1, ls=":")
    ax.set_xscale("log")
    finite = values[np.isfinite(values)]
    if col == "ratio":
        finite = np.concatenate([finite, lo[np.isfinite(lo)], hi[np.isfinite(hi)]])
    ax.set_xlim(min(finite.min(), 1.0) / 1.3, max(finite.max(), 1.0) * 1.3)
    log_ticks(ax, "x")


def cost_figure(timing: pd.DataFrame, baseline: str) -> Figure | None:
    """The headline rows' time and memory ratios to ``baseline``: a point with its 95% interval per gate, a row
    of panels per framework and device, a log axis through 1 (the baseline)."""
    rows = headline_rows(timing)
    if rows.empty:
        return None
    rows = rows[(rows["mark"] != "baseline") & np.isfinite(rows["ratio"].astype(float))]
    if rows.empty:
        return None
    plt, _ = _setup()
    groups = sorted(rows.groupby(["framework", "device"]), key=lambda kv: _fw_key(kv[0][0]))
    height = 1.2 + 0.42 * rows["gate"].nunique()
    fig, axes = plt.subplots(len(groups), 2, figsize=(10.0, height * len(groups)), squeeze=False,
                             constrained_layout=True)
    for i, ((framework, device), part) in enumerate(groups):
        part = part.sort_values("gate", key=lambda s: s.map(_gate_key))
        for j, (col, what) in enumerate((("ratio", "time"), ("mem_ratio", "peak memory"))):
            _ratio_panel(axes[i][j], part, col, what, baseline)
            axes[i][j].set_title(f"{_where(device, framework)}: {what}", fontsize=10)
    fig.suptitle(f"What each gate costs against {baseline}")
    caption = (f"Time ratio to {baseline} (points, with the 95% interval) and peak-memory ratio (squares), at the "
               "shape and mode of the sentences above; right of the dotted line costs more than the baseline.")
    return Figure("headline_cost", f"Cost against {baseline}", caption, _png(fig))


def build_headline(frame: pd.DataFrame, timing: pd.DataFrame, recovery: pd.DataFrame, baseline: str,
                   recovery_figure: Figure | None = None, prediction: pd.DataFrame | None = None,
                   prediction_figure: Figure | None = None) -> Headline:
    """The headline's sentences, caveats and figures (``recovery_figure``: the report's ``recovery_f1``;
    ``prediction``: ``reports.tables.prediction_table``, ``prediction_figure`` its ``prediction_accuracy``)."""
    prediction = pd.DataFrame() if prediction is None else prediction
    head = Headline(cost_sentences(timing, baseline), recovery_sentences(recovery, baseline),
                    caveats(frame, timing, recovery) + _prediction_seeds_caveat(prediction),
                    prediction=prediction_sentences(prediction, baseline))
    cost = cost_figure(timing, baseline)
    head.figures = [f for f in (cost, recovery_figure, prediction_figure) if f is not None]
    return head
