"""``gatebench compare OLD NEW``: per-case timing comparison of two results sets, a CI gate like ``asv compare``.

Cases are matched by ``case_id`` (the sorted case parameters; for pytest-benchmark rows, the test's full
name); the last row of a case wins.

**Relative** (the default, ``reference="topk"``; ``reports.relative``): a case whose group (same framework,
device, mode, gating, shape, dtype) has a case of the reference gate on both sides, timed in the same rounds, is
judged by how its per-round ratio to that reference moved: ``median(NEW's per-round ratios) / median(OLD's)``, a
bootstrap interval over each side's rounds, ``raw_ratio`` the absolute ratio for information. Whatever slows a
machine or a process slows the case and its reference alike and cancels. A reference case with cases judged
against it is slower only when every one of them (two or more) reads faster against it; its ``ratio`` is how it
moved against its group. ``reference=None`` (``--absolute``) and cases with no reference: absolute times, below.

**Absolute.** Samples of one run are not independent (a slow minute shifts them all) and the rounds of two runs
do not pair, so the independent units are the **rounds of each side**, or its **processes** when both sides were
timed in three or more (``harness.processes``; ``reports.comparison.between_runs``: the ratio of the geometric
means of the per-process medians, with a Welch t interval on their logs). For each case that both sides timed:

- rows with ``sample_rounds``: ``ratio = median(NEW's per-round medians) / median(OLD's per-round medians)``,
  with a percentile bootstrap interval that resamples the rounds of each side;
- rows without: the pooled samples' ``median(new) / median(old)``, bootstrap over samples (the Mann-Whitney U
  p-value of the raw samples is shown, for information only);
- fewer than ``MIN_UNITS`` (3) rounds or samples on a side: no interval; the ratio alone decides against the
  factor, and the ``method`` column says so ("judged on the ratio: too few rounds").

**Speed correction** (``speed=True``; off by default, because it did not help in measurement: see
docs/performance.md): CPU rows record ``probe_ms``, the machine-speed probe
(``harness.probe``) timed in every round of their group. Between two runs a slow spell of a shared machine can
slow a whole group (every case of it, so the rounds within the run do not see it); the probe, timed in the same
rounds, slows too. When both rows have a probe of the same ``probe_version``, every sample is divided by its
round's probe before the statistic (``speed_pair``): the ratio is then in units of the machine's speed, ``method``
ends in ", speed-corrected" and ``raw_ratio`` keeps the uncorrected ratio. Corrected or not, ``speed`` is NEW's
median probe over OLD's (``probe_ratio``, the ``machine`` column). Rows without a probe (older files, GPU rows,
pytest-benchmark) are compared raw.

**Regression** (mark ``+``) when ``ratio > factor`` and the interval's low end is above 1 (with no interval:
``ratio > factor``); **improvement** (``-``) symmetrically. A comparison with a noisy side
(``reports.rounds.noise_flags``: IQR over 10% of the median, or load over the usable cores; relative and across
processes only the load, as the spread is in the interval) is ``not judged (noisy)`` (mark ``~``) and does not
fail, unless its interval lies wholly above the factor (a 3x slowdown is not noise). Rows measured with different
``threads``, on different devices or read with different clocks (``clock``: a CPU row without one was read with the
wall clock) are never compared: they are ``not comparable (threads 1 vs 2)`` (mark ``#``). Intervals are at
``1 - alpha``, 99% by default (``DEFAULT_ALPHA``).

**Exit code** (``Comparison.exit_code``): 0 no regression; 1 a regression, or a case that OLD had ``ok`` with a
timing is, in NEW, gone (``g``), skipped (``s``), failed (``x``), ``ok`` without a timing (``?``) or not
comparable (``#``): the *missing* cases, which ``allow_missing`` lists without failing; 2 when there is nothing
to compare (no case in common, or OLD timed no case). Cases only in NEW (``n``) never fail.

``provenance_differences`` lists what differs between the two sides' provenance (machine, CPU, versions,
threads, device; not the commit or the time), which the command prints as a warning before the results.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .comparison import (
    FASTER,
    MIN_UNITS,
    NOT_JUDGED_INCONSISTENT,
    NOT_JUDGED_NOISY,
    SAME,
    SLOWER,
    UNKNOWN,
    Pairing,
    Sample,
    between_runs,
    finite,
    judge,
    mann_whitney,
    no_test,
    probe_of,
    process_medians_of,
    round_medians_of,
    sample_of,
    speed_corrected,
)
from .comparison import (
    mark as mark_of,
)
from .relative import (
    DEFAULT_REFERENCE,
    ReferenceIndex,
    group_of,
    reference_consensus,
    relative_estimate,
    relative_ratios,
)
from .rounds import noise_flags

# This machine class (shared 2-core CPU VMs): unchanged cases move 30-50% between runs in absolute time; the
# per-round medians, the interval and the noise flags absorb most of it, and 1.3 is the smallest factor that
# asv-style gates use on such machines.
DEFAULT_FACTOR = 1.3
# compare judges a hundred cases at once, and the interval of a case between two runs on a shared VM misses the
# part of the run-to-run drift a run does not show: at 95% intervals one unchanged case in a hundred was flagged in
# most back-to-back pairs measured, at 99% none was, and the planted 1.5x regressions still failed the gate
# (docs/performance.md, "Between runs").
DEFAULT_ALPHA = 0.01
EXIT_OK, EXIT_REGRESSION, EXIT_NOTHING = 0, 1, 2
# How a case that both sides timed was judged (``judged`` of a case's record; not a column of the table).
_RELATIVE, _ABSOLUTE = "relative", "absolute"
# Appended to the method of a comparison judged on speed-corrected timings.
SPEED_CORRECTED = ", speed-corrected"

# Marks, as asv compare prints them (and gatebench's own).
MARK_SLOWER, MARK_FASTER, MARK_SAME, MARK_FAILED, MARK_NEW, MARK_GONE, MARK_FIXED = (
    "+",
    "-",
    " ",
    "x",
    "n",
    "g",
    "!",
)
MARK_SKIPPED, MARK_UNTIMED, MARK_INCOMPARABLE, MARK_NOT_JUDGED = "s", "?", "#", "~"
_LABELS = {
    MARK_SLOWER: "slower",
    MARK_FASTER: "faster",
    MARK_SAME: "same",
    MARK_FAILED: "failed",
    MARK_NEW: "new",
    MARK_GONE: "gone",
    MARK_FIXED: "fixed",
    MARK_SKIPPED: "skipped",
    MARK_UNTIMED: "ok without timing",
    MARK_INCOMPARABLE: "not comparable",
    MARK_NOT_JUDGED: NOT_JUDGED_NOISY,
}
_SYMBOL = {
    SLOWER: MARK_SLOWER,
    FASTER: MARK_FASTER,
    SAME: MARK_SAME,
    UNKNOWN: MARK_SAME,
    NOT_JUDGED_NOISY: MARK_NOT_JUDGED,
    NOT_JUDGED_INCONSISTENT: MARK_NOT_JUDGED,
}
# Provenance keys expected to differ between two runs.
_PROVENANCE_IGNORED = frozenset({"commit", "time"})
# Row columns that must agree for two rows to be compared, and are shown with the provenance.
_MEASURED_WITH = ("threads", "device", "clock")


@dataclass
class Comparison:
    """The per-case table, its factor and level, and the provenance that differs between the sides."""

    table: pd.DataFrame
    factor: float
    alpha: float
    provenance: list[dict] = field(default_factory=list)

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["mark"] == MARK_SLOWER]

    @property
    def improvements(self) -> pd.DataFrame:
        return self.table[self.table["mark"] == MARK_FASTER]

    @property
    def missing(self) -> pd.DataFrame:
        """Cases OLD timed that NEW did not (gone, skipped, failed, ok without timing, not comparable)."""
        return self.table[self.table["missing"].astype(bool)]

    @property
    def probe_ratio(self) -> float:
        """The median over the cases both sides probed of NEW's probe time over OLD's (NaN when none): above 1,
        NEW's machine was slower."""
        values = self.table["speed"].astype(float)
        values = values[np.isfinite(values)]
        return float(np.median(values)) if values.size else math.nan

    @property
    def nothing_to_compare(self) -> str | None:
        """Why there is nothing to compare (``None`` when there is something)."""
        common = ~self.table["mark"].isin([MARK_NEW, MARK_GONE])
        if not common.any():
            return "OLD and NEW have no case in common"
        if not self.table["old_timed"].astype(bool).any():
            return "OLD has no case ok with a timing"
        return None

    @property
    def failed(self) -> bool:
        """A regression or a missing case (the exit code without ``allow_missing``, nothing to compare aside)."""
        return not self.regressions.empty or not self.missing.empty

    def exit_code(self, *, allow_missing: bool = False) -> int:
        """2 with nothing to compare; 1 with a regression, or a missing case unless ``allow_missing``; else 0."""
        if self.nothing_to_compare is not None:
            return EXIT_NOTHING
        if not self.regressions.empty or (not allow_missing and not self.missing.empty):
            return EXIT_REGRESSION
        return EXIT_OK


_COLUMNS = (
    "mark", "change", "before_ms", "after_ms", "ratio", "ci_low", "ci_high", "p_value", "tested", "method",
    "raw_ratio", "speed", "before_n", "after_n", "before_rounds", "after_rounds", "before_processes",
    "after_processes", "flags", "missing", "old_timed",
    "case_id",
)


def _sided(frame: pd.DataFrame, side: str) -> list[dict]:
    """The timing rows of one side as dicts tagged with ``side`` (the pairing keeps the last row of a case_id:
    a rerun with --resume may repeat a case)."""
    timing = frame[frame["kind"] == "timing"]
    return [{**row, "side": side} for row in timing.to_dict("records")]


def timed(row: Mapping[str, Any] | None) -> bool:
    """``ok`` with a timing: a finite median or at least one finite sample."""
    if row is None or row.get("status") != "ok":
        return False
    return finite(row.get("median_ms")) is not None or sample_of(row).values.size > 0


def _known(value: Any) -> Any:
    """``value`` unless it is missing (None, NaN, ``"-"``); whole floats as ints (pandas turns ints to floats)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "-":
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return value


def _measured_with(row: Mapping[str, Any], col: str) -> Any:
    """The row's ``col``; a CPU row from before the ``clock`` column was read with the wall clock."""
    value = _known(row.get(col))
    if value is None and col == "clock" and row.get("device") == "cpu":
        return "wall"
    return value


def incomparable(before: Mapping[str, Any], after: Mapping[str, Any]) -> str | None:
    """``"threads 1 vs 2"`` (or ``"device cpu vs gpu"``, ``"clock wall vs cpu"``) when both rows record the column
    and it differs (a CPU row without ``clock`` was read with the wall clock)."""
    for col in _MEASURED_WITH:
        old, new = _measured_with(before, col), _measured_with(after, col)
        if old is not None and new is not None and old != new:
            return f"{col} {old} vs {new}"
    return None


def _status_mark(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[str, bool, str] | None:
    """``(mark, missing, change)`` decided without the timings; ``None`` when the timings decide."""
    if timed(before):
        status = after.get("status")
        if status == "skipped":
            return MARK_SKIPPED, True, _LABELS[MARK_SKIPPED]
        if status != "ok":
            return MARK_FAILED, True, _LABELS[MARK_FAILED]
        if not timed(after):
            return MARK_UNTIMED, True, _LABELS[MARK_UNTIMED]
        why = incomparable(before, after)
        return None if why is None else (MARK_INCOMPARABLE, True, f"not comparable ({why})")
    if before.get("status") == "failed" and timed(after):
        return MARK_FIXED, False, _LABELS[MARK_FIXED]
    return MARK_SAME, False, _LABELS[MARK_SAME]


def _n_distinct(labels: np.ndarray | None) -> float:
    """How many rounds (or processes) a side's samples came from; NaN when it does not record them."""
    return float(np.unique(labels).size) if labels is not None else math.nan


def _raw_ratio(case: Sample, base: Sample) -> float:
    """The uncorrected ratio: of the medians of per-round medians (of the pooled medians without rounds)."""
    if case.rounds is None or base.rounds is None:
        top, bottom = case.center, base.center
    else:
        top, bottom = float(np.median(round_medians_of(case))), float(np.median(round_medians_of(base)))
    return top / bottom if math.isfinite(bottom) and bottom > 0 else math.nan


def probe_ratio(before: Mapping[str, Any], after: Mapping[str, Any]) -> float:
    """NEW's median machine-speed probe time over OLD's (above 1: NEW's machine was slower); NaN unless both rows
    have a usable probe of the same version."""
    if _known(before.get("probe_version")) != _known(after.get("probe_version")):
        return math.nan
    new, old = probe_of(after), probe_of(before)
    if new is None or old is None:
        return math.nan
    return float(np.median(new) / np.median(old))


def speed_pair(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[Sample, Sample] | None:
    """Both sides' samples divided by their rounds' machine-speed probe (NEW's first); ``None`` unless both rows
    have a probe of the same version."""
    if not math.isfinite(probe_ratio(before, after)):
        return None
    case, base = speed_corrected(after), speed_corrected(before)
    return None if case is None or base is None else (case, base)


def _judged(before: Mapping[str, Any], after: Mapping[str, Any], *, factor: float, speed: bool = False,
            reference: str | None = None, **how) -> dict:
    """The timing columns of a case both sides timed (see the module docstring)."""
    case, base = sample_of(after), sample_of(before)
    corrected = speed_pair(before, after) if speed else None
    # the uncorrected ratio is the statistic's own unless the samples are replaced by corrected ones
    raw = _raw_ratio(case, base) if corrected is not None else None
    if corrected is not None:
        case, base = corrected
    # across processes the interval holds the rows' spread already: only a load over the cores flags them
    spread = min(process_medians_of(case).size, process_medians_of(base).size) < MIN_UNITS
    flags = sorted(set(noise_flags(before, spread=spread)) | set(noise_flags(after, spread=spread)))
    got = judge(case, base, factor=factor, statistic=between_runs, test=no_test, flags=flags, overrule=factor,
                **how)
    with_rounds = case.rounds is not None and base.rounds is not None
    p = mann_whitney(case, base) if not with_rounds else math.nan
    tested = math.isfinite(got.ci_low) and math.isfinite(got.ci_high)
    mark = _SYMBOL[got.mark]
    return dict(ratio=got.ratio, ci_low=got.ci_low, ci_high=got.ci_high, p_value=p, tested=tested,
                method=got.method + (SPEED_CORRECTED if corrected is not None else ""), flags=", ".join(flags),
                mark=mark, change=got.mark if mark == MARK_NOT_JUDGED else _LABELS[mark],
                raw_ratio=got.ratio if raw is None else raw, speed=probe_ratio(before, after))


def _load_flags(*rows: Mapping[str, Any] | None) -> list[str]:
    """The noise flags of a relative comparison: a load over the cores on any of its rows (the spread of the
    per-round ratios is in its interval)."""
    return sorted({flag for row in rows if row is not None for flag in noise_flags(row, spread=False)})


def _judged_relative(before: Mapping[str, Any], after: Mapping[str, Any], refs: tuple[Any, Any], *,
                     reference: str, factor: float, alpha: float, level: float, n_boot: int, seed: int,
                     **_: Any) -> dict | None:
    """The timing columns of a case judged against its group's reference (``reports.relative``); None when a
    side lacks a reference timed in the same rounds (the case is then judged on absolute times)."""
    ref_old, ref_new = refs
    old_rr, new_rr = relative_ratios(before, ref_old), relative_ratios(after, ref_new)
    if old_rr is None or new_rr is None:
        return None
    est = relative_estimate(new_rr, old_rr, reference, level=level, n_boot=n_boot, seed=seed)
    flags = _load_flags(before, after, ref_old, ref_new)
    got = mark_of(est.ratio, math.nan, alpha=alpha, factor=factor, ci_low=est.ci_low, ci_high=est.ci_high,
               flags=flags, overrule=factor)
    symbol = _SYMBOL[got]
    absolute = between_runs(sample_of(after), sample_of(before), level=level, n_boot=n_boot, seed=seed).ratio
    return dict(ratio=est.ratio, ci_low=est.ci_low, ci_high=est.ci_high, p_value=math.nan,
                tested=math.isfinite(est.ci_low) and math.isfinite(est.ci_high), method=est.method,
                flags=", ".join(flags), mark=symbol, change=got if symbol == MARK_NOT_JUDGED else _LABELS[symbol],
                raw_ratio=absolute, speed=probe_ratio(before, after), judged=_RELATIVE)


def _compare_case(cid: object, before: dict | None, after: dict | None, refs: tuple[Any, Any] | None = None,
                  **how) -> dict:
    nan = np.nan
    old, new = (sample_of(row) if row is not None else None for row in (before, after))
    rec: dict = {"case_id": cid, "before_ms": before.get("median_ms") if before else nan,
                 "after_ms": after.get("median_ms") if after else nan,
                 "ratio": nan, "ci_low": nan, "ci_high": nan, "p_value": nan, "tested": False, "method": "",
                 "raw_ratio": nan, "speed": nan,
                 "before_n": old.values.size if old is not None else 0,
                 "after_n": new.values.size if new is not None else 0,
                 "before_rounds": _n_distinct(old.rounds if old is not None else None),
                 "after_rounds": _n_distinct(new.rounds if new is not None else None),
                 "before_processes": _n_distinct(old.processes if old is not None else None),
                 "after_processes": _n_distinct(new.processes if new is not None else None),
                 "flags": "", "missing": False, "old_timed": timed(before), "judged": None}
    if before is None or after is None:
        rec["mark"] = MARK_NEW if before is None else MARK_GONE
        rec["change"], rec["missing"] = _LABELS[rec["mark"]], rec["old_timed"]
    elif (status := _status_mark(before, after)) is not None:
        rec["mark"], rec["missing"], rec["change"] = status
    else:
        relative = _judged_relative(before, after, refs, **how) if refs is not None else None
        rec.update(relative if relative is not None else {**_judged(before, after, **how), "judged": _ABSOLUTE})
    return rec


def _judge_references(rows: list[dict], cases: Mapping[Any, tuple[dict | None, dict | None]], reference: str) -> None:
    """Reference cases of groups with cases judged against them: slower when every such case (two or more) reads
    faster against it (``reports.relative.reference_consensus``), else unchanged; ``ratio`` is how the reference
    moved against its group (the median inverted ratio), ``raw_ratio`` its absolute ratio."""
    judged: dict[tuple, list[dict]] = {}
    for rec in rows:
        if rec["judged"] == _RELATIVE and np.isfinite(rec["ratio"]) and rec["mark"] in (MARK_SLOWER, MARK_FASTER,
                                                                                         MARK_SAME):
            judged.setdefault(group_of(cases[rec["case_id"]][1]), []).append(rec)
    for rec in rows:
        after = cases[rec["case_id"]][1]
        if rec["judged"] != _ABSOLUTE or after.get("gate") != reference:
            continue
        group = judged.get(group_of(after), [])
        if not group:
            continue  # nothing was judged against it: its absolute comparison stands
        ratios = [r["ratio"] for r in group]
        slower = reference_consensus([r["mark"] for r in group], ratios, MARK_FASTER)
        moved = slower if slower is not None else float(np.median([1.0 / r for r in ratios]))
        rec.update(ratio=moved, ci_low=np.nan, ci_high=np.nan, tested=False, p_value=np.nan,
                   mark=MARK_SLOWER if slower is not None else MARK_SAME,
                   change=_LABELS[MARK_SLOWER if slower is not None else MARK_SAME],
                   method=f"reference: {sum(r['mark'] == MARK_FASTER for r in group)} of {len(group)} cases of its "
                          f"group faster against it")


def compare_frames(
    old: pd.DataFrame,
    new: pd.DataFrame,
    *,
    factor: float = DEFAULT_FACTOR,
    alpha: float = DEFAULT_ALPHA,
    n_boot: int = 2000,
    seed: int = 0,
    speed: bool = False,
    reference: str | None = DEFAULT_REFERENCE,
) -> Comparison:
    """Compare the timing rows of ``new`` against ``old`` (see the module docstring); the intervals are at the
    ``1 - alpha`` level. ``reference``: judge each case against its group's case of this gate, timed in the same
    rounds (``reports.relative``; None: absolute times). ``speed``: judge speed-corrected absolute timings where
    both rows have a probe (else raw; off by default: see the module docstring)."""
    if not (isinstance(factor, (int, float)) and np.isfinite(factor) and factor >= 1.0):
        raise ValueError(f"factor: expected a number >= 1 (e.g. 1.3 for 30%); got {factor!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a significance level in (0, 1); got {alpha!r}")
    pairing = Pairing(_sided(old, "old") + _sided(new, "new"), ("case_id", "side"), {"side": "old"}, impl_key=None)
    cases = dict.fromkeys(key[0] for key in pairing.rows if key[1] == "old")
    cases.update(dict.fromkeys(key[0] for key in pairing.rows if key[1] == "new"))
    if reference is not None and not (isinstance(reference, str) and reference):
        raise ValueError(f"reference: expected a gate name (e.g. 'topk') or None; got {reference!r}")
    how = dict(alpha=alpha, factor=factor, level=1.0 - alpha, n_boot=n_boot, seed=seed, speed=speed)
    sides = {side: [row for key, row in pairing.rows.items() if key[1] == side] for side in ("old", "new")}
    gates = sorted({str(row.get("gate")) for rows in sides.values() for row in rows if row.get("gate") is not None})
    if reference is not None and reference != DEFAULT_REFERENCE and reference not in gates:
        close = difflib.get_close_matches(reference, gates, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"reference: expected a gate of the timing rows ({', '.join(gates) or 'none'}); got "
                         f"{reference!r}{hint}")
    index = {side: ReferenceIndex(sides[side], reference) for side in sides} if reference else None
    rows, pairs = [], {}
    for cid in cases:
        after = pairing.get({"case_id": cid, "side": "new"})
        before = pairing.baseline_of({"case_id": cid, "side": "new"})
        pairs[cid] = (before, after)
        refs = None
        if index is not None and before is not None and after is not None:
            refs = (index["old"].of(before), index["new"].of(after))
        rows.append(_compare_case(cid, before, after, refs, reference=reference, **how))
    if reference:
        _judge_references(rows, pairs, reference)
    table = pd.DataFrame(rows, columns=list(_COLUMNS))
    return Comparison(table, float(factor), float(alpha), provenance_differences(old, new))


def _provenance_values(frame: pd.DataFrame) -> dict[str, set[str]]:
    """``{key: {values}}`` over the timing rows' provenance records and their ``threads`` / ``device``."""
    out: dict[str, set[str]] = {}
    timing = frame[frame["kind"] == "timing"] if "kind" in frame.columns else frame
    for row in timing.to_dict("records"):
        prov = row.get("provenance")
        items = list(prov.items()) if isinstance(prov, dict) else []
        items += [(col, row.get(col)) for col in _MEASURED_WITH if col in row]
        for key, value in items:
            value = _known(value)
            if key in _PROVENANCE_IGNORED or value is None:
                continue
            text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)
            out.setdefault(key, set()).add(text)
    return out


def provenance_differences(old: pd.DataFrame, new: pd.DataFrame) -> list[dict]:
    """``[{"key", "old", "new"}]`` for every provenance key (machine, CPU, versions, threads, device; not the
    commit or the time) whose values differ between the sides; values joined with ``", "``, ``"-"`` when a side
    does not record the key."""
    left, right = _provenance_values(old), _provenance_values(new)
    out = []
    for key in sorted(left.keys() | right.keys()):
        a, b = left.get(key, set()), right.get(key, set())
        if a != b:
            out.append({"key": key, "old": ", ".join(sorted(a)) or "-", "new": ", ".join(sorted(b)) or "-"})
    return out


def compare_paths(old: list[str], new: list[str], **kwargs) -> tuple[Comparison, list[str]]:
    """Load both sides (files or directories) and compare them; returns the comparison and load problems."""
    from .load import load_results

    left, right = load_results(old), load_results(new)
    problems = [f"OLD {p}" for p in left.problems] + [f"NEW {p}" for p in right.problems]
    for side, loaded, paths in (("OLD", left, old), ("NEW", right, new)):
        if loaded.frame.empty or (loaded.frame["kind"] == "timing").sum() == 0:
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


def format_units(row: pd.Series) -> str:
    """``"n_old/n_new"`` samples, with ``" (r_old/r_new rounds)"`` when the rows have rounds."""
    text = f"{row['before_n']}/{row['after_n']}"
    rounds = (row["before_rounds"], row["after_rounds"])
    processes = (row.get("before_processes", math.nan), row.get("after_processes", math.nan))
    if all(np.isfinite(r) for r in rounds):
        text += f" ({rounds[0]:.0f}/{rounds[1]:.0f} rounds"
        text += f", {processes[0]:.0f}/{processes[1]:.0f} processes)" if all(np.isfinite(p) for p in processes) \
            else ")"
    return text
