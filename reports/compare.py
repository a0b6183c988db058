"""``gatebench compare OLD NEW``: per-case timing comparison of two results sets, like ``asv compare``.

Cases are matched by ``case_id`` (the sorted case parameters; for pytest-benchmark rows, the test's full
name). For each case present on both sides with status ``ok``: ``ratio = median(new) / median(old)``, a
bootstrap 95% interval of that ratio and a two-sided Mann-Whitney U test on the raw samples.

A case is a **regression** (mark ``+``, "slower") when ``ratio > factor`` and the change is significant
(``p < alpha``); an **improvement** (``-``, "faster") when ``ratio < 1 / factor`` and significant. When either
side has fewer than two raw samples no test can be made and the ratio alone decides (as ``asv compare`` does).
A case that was ``ok`` before and ``failed`` now is marked ``x`` and also counts as a regression. Cases on one
side only are listed (``new`` / ``gone``) and never fail the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .load import samples_of
from .stats import DEFAULT_ALPHA, ratio_stats

# Marks, as asv compare prints them.
MARK_SLOWER, MARK_FASTER, MARK_SAME, MARK_FAILED, MARK_NEW, MARK_GONE, MARK_FIXED = (
    "+",
    "-",
    " ",
    "x",
    "n",
    "g",
    "!",
)
_LABELS = {
    MARK_SLOWER: "slower",
    MARK_FASTER: "faster",
    MARK_SAME: "same",
    MARK_FAILED: "failed",
    MARK_NEW: "new",
    MARK_GONE: "gone",
    MARK_FIXED: "fixed",
}


@dataclass
class Comparison:
    """The per-case table and whether any case regressed."""

    table: pd.DataFrame
    factor: float
    alpha: float

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["mark"].isin([MARK_SLOWER, MARK_FAILED])]

    @property
    def improvements(self) -> pd.DataFrame:
        return self.table[self.table["mark"] == MARK_FASTER]

    @property
    def failed(self) -> bool:
        return not self.regressions.empty


def _latest_timing(frame: pd.DataFrame) -> pd.DataFrame:
    """Timing rows, the last one of each case_id (a rerun with --resume may repeat a case)."""
    timing = frame[frame["kind"] == "timing"]
    return timing.drop_duplicates(subset="case_id", keep="last").set_index("case_id")


def compare_frames(
    old: pd.DataFrame,
    new: pd.DataFrame,
    *,
    factor: float = 1.1,
    alpha: float = DEFAULT_ALPHA,
    n_boot: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare the timing rows of ``new`` against ``old`` (see the module docstring)."""
    if not (isinstance(factor, (int, float)) and np.isfinite(factor) and factor >= 1.0):
        raise ValueError(f"factor: expected a number >= 1 (e.g. 1.1 for 10%); got {factor!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a significance level in (0, 1); got {alpha!r}")
    a, b = _latest_timing(old), _latest_timing(new)
    rows: list[dict] = []
    for cid in list(a.index) + [c for c in b.index if c not in a.index]:
        before = a.loc[cid] if cid in a.index else None
        after = b.loc[cid] if cid in b.index else None
        rec: dict = {
            "case_id": cid,
            "before_ms": np.nan,
            "after_ms": np.nan,
            "ratio": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "p_value": np.nan,
            "tested": False,
        }
        if before is not None:
            rec["before_ms"] = before.get("median_ms")
        if after is not None:
            rec["after_ms"] = after.get("median_ms")
        if before is None:
            rec["mark"] = MARK_NEW
        elif after is None:
            rec["mark"] = MARK_GONE
        elif before["status"] == "ok" and after["status"] != "ok":
            rec["mark"] = MARK_FAILED if after["status"] == "failed" else MARK_SAME
        elif before["status"] != "ok" and after["status"] == "ok":
            rec["mark"] = MARK_FIXED if before["status"] == "failed" else MARK_SAME
        elif before["status"] != "ok":
            rec["mark"] = MARK_SAME
        else:
            st = ratio_stats(
                samples_of(after),
                samples_of(before),
                median_a=after.get("median_ms"),
                median_b=before.get("median_ms"),
                n_boot=n_boot,
                seed=seed,
            )
            rec.update(ratio=st.ratio, ci_low=st.ci_low, ci_high=st.ci_high, p_value=st.p_value)
            tested = np.isfinite(st.p_value)
            rec["tested"] = bool(tested)
            significant = (st.p_value < alpha) if tested else True
            if significant and st.ratio > factor:
                rec["mark"] = MARK_SLOWER
            elif significant and st.ratio < 1.0 / factor:
                rec["mark"] = MARK_FASTER
            else:
                rec["mark"] = MARK_SAME
        rec["change"] = _LABELS[rec["mark"]]
        rows.append(rec)
    columns = [
        "mark",
        "change",
        "before_ms",
        "after_ms",
        "ratio",
        "ci_low",
        "ci_high",
        "p_value",
        "tested",
        "case_id",
    ]
    return Comparison(table=pd.DataFrame(rows, columns=columns), factor=float(factor), alpha=float(alpha))


def compare_paths(old: list[str], new: list[str], **kwargs) -> tuple[Comparison, list[str]]:
    """Load both sides (files or directories) and compare them; returns the comparison and load problems."""
    from .load import load_results

    left, right = load_results(old), load_results(new)
    problems = [f"OLD {p}" for p in left.problems] + [f"NEW {p}" for p in right.problems]
    for side, loaded, paths in (("OLD", left, old), ("NEW", right, new)):
        if (loaded.frame["kind"] == "timing").sum() == 0:
            raise ValueError(f"{side}: expected results files with timing rows; found none in {paths}")
    return compare_frames(left.frame, right.frame, **kwargs), problems


def format_ms(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    if value >= 100:
        return f"{value:.0f}ms"
    if value >= 1:
        return f"{value:.3g}ms"
    return f"{value * 1000:.3g}μs"


def format_ratio(row: pd.Series) -> str:
    if not np.isfinite(row["ratio"]):
        return "-"
    text = f"{row['ratio']:.2f}"
    if np.isfinite(row["ci_low"]):
        text += f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    return text
