"""``gatebench compare OLD NEW``: per-case timing comparison of two results sets, like ``asv compare``.

Cases are matched by ``case_id`` (the sorted case parameters; for pytest-benchmark rows, the test's full
name). For each case present on both sides with status ``ok``: ``ratio = median(new) / median(old)``, a
bootstrap 95% interval of that ratio and a two-sided Mann-Whitney U test on the raw samples.

The pairing (NEW's row of a case with OLD's), the ratio, the test and the mark are ``reports.comparison``'s,
with the given ``factor``: a **regression** (mark ``+``, "slower") when ``ratio > factor`` and the change is
significant (``p < alpha``); an **improvement** (``-``, "faster") when ``ratio < 1 / factor`` and significant.
When either side has fewer than two raw samples no test can be made and the ratio alone decides (as ``asv
compare`` does; this needs ``factor > 1``, with ``factor == 1`` such a case is unchanged).
A case that was ``ok`` before and ``failed`` now is marked ``x`` and also counts as a regression. Cases on one
side only are listed (``new`` / ``gone``) and never fail the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .comparison import DEFAULT_ALPHA, FASTER, SAME, SLOWER, UNKNOWN, Pairing, judge, sample_of

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


_COLUMNS = ("mark", "change", "before_ms", "after_ms", "ratio", "ci_low", "ci_high", "p_value", "tested", "case_id")
_SYMBOL = {SLOWER: MARK_SLOWER, FASTER: MARK_FASTER, SAME: MARK_SAME, UNKNOWN: MARK_SAME}


def _sided(frame: pd.DataFrame, side: str) -> list[dict]:
    """The timing rows of one side as dicts tagged with ``side`` (the pairing keeps the last row of a case_id:
    a rerun with --resume may repeat a case)."""
    timing = frame[frame["kind"] == "timing"]
    return [{**row, "side": side} for row in timing.to_dict("records")]


def _status_mark(before: dict, after: dict) -> str | None:
    """The mark decided by the statuses alone (``None`` when both are ``ok`` and the timings decide)."""
    ok_before, ok_after = before["status"] == "ok", after["status"] == "ok"
    if ok_before and not ok_after:
        return MARK_FAILED if after["status"] == "failed" else MARK_SAME
    if not ok_before and ok_after:
        return MARK_FIXED if before["status"] == "failed" else MARK_SAME
    return MARK_SAME if not ok_before else None


def _compare_case(cid: object, before: dict | None, after: dict | None, **how) -> dict:
    nan = np.nan
    rec: dict = {"case_id": cid, "before_ms": before.get("median_ms") if before else nan,
                 "after_ms": after.get("median_ms") if after else nan,
                 "ratio": nan, "ci_low": nan, "ci_high": nan, "p_value": nan, "tested": False}
    if before is None or after is None:
        rec["mark"] = MARK_NEW if before is None else MARK_GONE
    elif (status := _status_mark(before, after)) is not None:
        rec["mark"] = status
    else:
        got = judge(sample_of(after), sample_of(before), **how)
        rec.update(ratio=got.ratio, ci_low=got.ci_low, ci_high=got.ci_high, p_value=got.p_value,
                   tested=got.tested, mark=_SYMBOL[got.mark])
    rec["change"] = _LABELS[rec["mark"]]
    return rec


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
    pairing = Pairing(_sided(old, "old") + _sided(new, "new"), ("case_id", "side"), {"side": "old"}, impl_key=None)
    cases = dict.fromkeys(key[0] for key in pairing.rows if key[1] == "old")
    cases.update(dict.fromkeys(key[0] for key in pairing.rows if key[1] == "new"))
    rows = []
    for cid in cases:
        after = pairing.get({"case_id": cid, "side": "new"})
        before = pairing.baseline_of({"case_id": cid, "side": "new"})
        rows.append(_compare_case(cid, before, after, alpha=alpha, factor=factor, n_boot=n_boot, seed=seed))
    return Comparison(table=pd.DataFrame(rows, columns=list(_COLUMNS)), factor=float(factor), alpha=float(alpha))


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
