"""Regression history, offline: time against commit per benchmark, with its spread, as a self-contained figure.

``load_history(paths)`` reads either or both of:

- asv's results folder (``.asv/results``: one ``<machine>/<commit>-<env>.json`` per commit; ``benchmarks.json``
  gives each benchmark's unit). Each parameter combination is one benchmark (``TimeGate.time_call(topk, torch,
  ...)``); its value is asv's result (seconds converted to ms, bytes to KiB) and its spread asv's ``q_25`` /
  ``q_75``. asv is not imported: the JSON is read as it is.
- gatebench results (JSON Lines files or folders, several commits' worth): a timing case per ``case_id``, its
  commit from the row's provenance, its value the median and its spread the 25th-75th percentile of the raw
  samples.

It returns a long frame (``HISTORY_COLUMNS``): one row per benchmark and commit, commits ordered by date.
``history_figure`` draws one small panel per benchmark (at most ``max_panels``, the ones that moved most first);
``spans_commits`` says whether loaded rows span several commits (the report then adds its history section).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .plots import Figure, _png, _setup

HISTORY_COLUMNS: tuple[str, ...] = ("benchmark", "commit", "date", "value", "low", "high", "unit", "source")
_ASV_SKIP = {"machine.json", "benchmarks.json"}


def _asv_units(folder: Path) -> dict[str, str]:
    path = folder / "benchmarks.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {name: str(b.get("unit", "")) for name, b in doc.items() if isinstance(b, dict)}


def _asv_rows(path: Path, units: dict[str, str]) -> list[dict]:
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or "commit_hash" not in doc or "results" not in doc:
        return []
    columns = doc.get("result_columns", ["result", "params"])
    out = []
    for name, values in doc["results"].items():
        rec = dict(zip(columns, values, strict=False))
        unit = units.get(name, "seconds" if name.split(".")[-1].startswith("time_") else "")
        scale, shown = {"seconds": (1e3, "ms"), "bytes": (1 / 1024, "KiB")}.get(unit, (1.0, unit))
        combos = list(itertools.product(*rec.get("params") or [[]])) or [()]
        results = rec.get("result") or []
        q25, q75 = rec.get("stats_q_25") or [None] * len(results), rec.get("stats_q_75") or [None] * len(results)
        for combo, value, lo, hi in zip(combos, results, q25, q75, strict=False):
            if value is None or not np.isfinite(float(value)):
                continue
            label = name + (f"({', '.join(str(c).strip(chr(39)) for c in combo)})" if combo else "")
            out.append(dict(benchmark=label, commit=str(doc["commit_hash"])[:8], date=float(doc.get("date") or 0),
                            value=float(value) * scale, low=None if lo is None else float(lo) * scale,
                            high=None if hi is None else float(hi) * scale, unit=shown, source=str(path)))
    return out


def _gatebench_rows(frame: pd.DataFrame) -> list[dict]:
    from .plots import _quartiles

    ok = frame[(frame["kind"] == "timing") & (frame["status"] == "ok") & frame["median_ms"].notna()]
    out = []
    for _, row in ok.iterrows():
        prov = row.get("provenance") if isinstance(row.get("provenance"), dict) else {}
        commit = str(prov.get("commit") or "unknown")[:8]
        date = pd.Timestamp(prov["time"]).timestamp() * 1e3 if prov.get("time") else 0.0
        lo, hi = _quartiles(row)
        out.append(dict(benchmark=str(row["case_id"]), commit=commit, date=date, value=float(row["median_ms"]),
                        low=lo, high=hi, unit="ms", source=str(row.get("source"))))
    return out


def _is_asv_results(path: Path) -> bool:
    return path.is_dir() and any((d / "machine.json").is_file() for d in [path, *path.iterdir()] if d.is_dir())


def load_history(paths: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """asv results folders and gatebench results files into one frame (``HISTORY_COLUMNS``), one row per
    benchmark and commit (several rows of one commit: the median of their values and spreads)."""
    from .load import load_results

    rows: list[dict] = []
    plain: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ValueError(f"history: expected an asv results folder or gatebench results files; got {raw} "
                             "(no such file or folder)")
        if _is_asv_results(path):
            for machine in sorted(p for p in path.iterdir() if p.is_dir()) or [path]:
                units = _asv_units(path) or _asv_units(machine)
                for file in sorted(machine.glob("*.json")):
                    if file.name not in _ASV_SKIP:
                        rows += _asv_rows(file, units)
        else:
            plain.append(path)
    if plain:
        rows += _gatebench_rows(load_results(plain).frame)
    return _per_commit(pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)))


def _per_commit(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return rows
    agg = rows.groupby(["benchmark", "commit", "unit"], as_index=False).agg(
        date=("date", "min"), value=("value", "median"), low=("low", "median"), high=("high", "median"),
        source=("source", "first"))
    order = agg.groupby("commit")["date"].min().sort_values(kind="stable")
    agg["commit"] = pd.Categorical(agg["commit"], categories=list(order.index), ordered=True)
    return agg.sort_values(["benchmark", "commit"]).reset_index(drop=True)[list(HISTORY_COLUMNS)]


def spans_commits(frame: pd.DataFrame) -> bool:
    """Whether the frame's timing rows come from two or more commits (provenance ``commit``)."""
    if frame.empty or "provenance" not in frame:
        return False
    timing = frame[frame["kind"] == "timing"]
    commits = {p.get("commit") for p in timing["provenance"] if isinstance(p, dict) and p.get("commit")}
    return len(commits) > 1


def _moved(history: pd.DataFrame) -> pd.Series:
    """How much each benchmark moved over the commits: max / min of its values."""
    by = history.groupby("benchmark")["value"]
    return (by.max() / by.min().where(by.min() > 0)).fillna(1.0).sort_values(ascending=False)


def history_figure(history: pd.DataFrame, max_panels: int = 12) -> Figure | None:
    """Time (or the benchmark's unit) against commit, a panel per benchmark with its spread; None with fewer
    than two commits."""
    if history.empty or history["commit"].nunique() < 2:
        return None
    names = list(_moved(history).index[:max_panels])
    plt, _ = _setup()
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 2.6 * rows), squeeze=False, constrained_layout=True)
    commits = list(history["commit"].cat.categories)
    for ax, name in zip(axes.flat, names, strict=False):
        part = history[history["benchmark"] == name]
        x = [commits.index(c) for c in part["commit"]]
        val = part["value"].to_numpy(float)
        lo = np.where(part["low"].notna(), val - part["low"].to_numpy(float, na_value=np.nan), 0)
        hi = np.where(part["high"].notna(), part["high"].to_numpy(float, na_value=np.nan) - val, 0)
        ax.errorbar(x, val, yerr=np.vstack([np.clip(lo, 0, None), np.clip(hi, 0, None)]), fmt="-o", ms=4,
                    capsize=3)
        ax.set_xticks(range(len(commits)), commits, rotation=30, fontsize=8)
        ax.set_title(_short(name), fontsize=8)
        ax.set_ylabel(part["unit"].iloc[0])
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Regression history: value per commit (bars: interquartile range)")
    shown = f"the {len(names)} that moved most of {history['benchmark'].nunique()}"
    caption = (f"Each benchmark's value against commit (oldest left), {shown}; error bars: the 25th-75th "
               "percentile of its samples.")
    return Figure("history", "Regression history", caption, _png(fig))


def _short(name: str, width: int = 70) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


__all__ = ["HISTORY_COLUMNS", "load_history", "history_figure", "spans_commits"]
