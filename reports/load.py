"""Load results files into one pandas DataFrame with a declared schema.

Three inputs are understood, in any mix:

- gatebench JSON Lines (``*.jsonl``): timing and recovery rows (``harness/results.py``);
- pytest-benchmark JSON (``--benchmark-json``): each benchmark becomes a timing row; its case columns come
  from ``extra_info`` (the benchmarks in ``tests/benchmarks/`` put the timing keys there), its times are
  converted from seconds to milliseconds, and its raw samples (``stats.data``, present with
  ``--benchmark-save-data``) become ``samples_ms``;
- a directory: every ``*.jsonl`` and ``*.json`` file in it, recursively.

One frame holds every row: one row per case (of a JSONL file: the case's newest row, the one a resumed run
appended last), the columns of ``SCHEMA`` (always present, with their dtypes) plus any unknown extra columns,
kept as they came. Lines that are not JSON, rows of an unknown kind or of another schema version, rows that lack
an identifying column and rows with a wrong-typed or impossible value (``harness.schema.row_problem``) are
listed in ``Loaded.problems`` (``"path:line: what"``) and left out, never fatal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.merge import merge_process_rows
from harness.results import read_rows
from harness.schema import (  # noqa: F401 - RECOVERY_METRICS: the metrics the report's tables summarise
    COMMON_KEYS,
    KINDS,
    RECOVERY_METRICS,
    SCHEMA_VERSION,
    TIMING,
    TIMING_KEYS,
    reader_dtypes,
)

__all__ = ["SCHEMA", "RECOVERY_METRICS", "REQUIRED", "NON_KEY_COLUMNS", "Loaded", "load_results", "to_frame",
           "empty_frame", "samples_of", "provenance_summary"]

# Declared columns and their pandas dtypes: every column of harness.schema (both row kinds), then where the row
# came from. "object" columns hold list or dict values.
SCHEMA: dict[str, str] = {**reader_dtypes(), "source": "string", "line": "Int64"}
# Columns that every row of a kind must have.
REQUIRED: dict[str, tuple[str, ...]] = {
    "timing": ("gate", "framework", "case_id", "status"),
    "recovery": ("gate", "framework", "status"),
    "prediction": ("gate", "framework", "status"),
}
# Columns that never identify a case (used to find the identifying columns of recovery rows).
NON_KEY_COLUMNS: frozenset[str] = (
    frozenset(COMMON_KEYS) | frozenset(c.name for c in TIMING.statistics + TIMING.labels) | {"source", "line"}
)


@dataclass
class Loaded:
    """The loaded rows (``frame``) and one line per skipped line or file (``problems``)."""

    frame: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def _expand(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[str]]:
    files: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json") and p.is_file())
            if not found:
                problems.append(f"{path}: directory holds no .jsonl or .json results file")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            problems.append(f"{path}: no such file")
    return files, problems


def _is_pytest_benchmark(path: Path) -> bool:
    if path.suffix != ".json":
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(1).strip()
    except OSError:
        return False
    return head == "{"


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The usable rows of one JSONL file with their line numbers, the newest row of each case only (a resumed run
    appends its reruns after the old rows); ``read_rows`` reports the unusable lines as ``path:line: what``."""
    result = read_rows(path)
    numbered = [{**row, "line": number} for row, number in zip(result.rows, result.lines, strict=True)]
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in merge_process_rows(numbered):  # a case timed in several processes: one row (harness.merge)
        key = (row.get("kind"), row.get("suite"), row.get("case_id"))
        newest.pop(key, None)  # the rerun's row stands where it was written, after the old one
        newest[key] = {**row, "source": str(path)}
    return list(newest.values()), list(result.problems)


def _read_pytest_benchmark(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Timing rows from a pytest-benchmark ``--benchmark-json`` file (seconds converted to milliseconds)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        return [], [f"{path}: not JSON ({exc.msg})"]
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        return [], [f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)"]
    prov = _benchmark_provenance(doc)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for index, bench in enumerate(doc["benchmarks"]):
        if not isinstance(bench, dict) or not isinstance(bench.get("stats"), dict):
            problems.append(f"{path}:benchmarks[{index}]: benchmark entry without 'stats'")
            continue
        rows.append(_benchmark_row(bench, prov, path, index + 1))
    return rows, problems


def _benchmark_provenance(doc: dict[str, Any]) -> dict[str, Any]:
    machine = doc.get("machine_info") or {}
    commit = doc.get("commit_info") or {}
    return {
        "machine": machine.get("node"),
        "cpu": (machine.get("cpu") or {}).get("brand_raw"),
        "python": machine.get("python_version"),
        "commit": commit.get("id"),
        "time": doc.get("datetime"),
        "dirty": commit.get("dirty"),
        "source_tool": f"pytest-benchmark {doc.get('version', '')}".strip(),
    }


def _benchmark_row(bench: dict[str, Any], prov: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    """One benchmark as a timing row: case columns from ``extra_info`` (else ``params``), times in ms."""
    stats, extra = bench["stats"], dict(bench.get("extra_info") or {})
    row: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "kind": "timing",
        "suite": extra.pop("suite", "pytest-benchmark"),
        "status": "ok",
        "error": None,
        "provenance": prov,
        "source": str(path),
        "line": line,
    }
    for key in TIMING_KEYS:
        if key in extra:
            row[key] = extra.pop(key)
    bench_params = bench.get("params") or {}  # pytest's parametrize values
    for key in TIMING_KEYS:
        if key not in row and key in bench_params:
            row[key] = bench_params[key]
    row.setdefault("gate", extra.pop("gate", None) or bench.get("name"))
    row.setdefault("framework", extra.pop("framework", None) or "unknown")
    row["case_id"] = extra.pop("case_id", None) or bench.get("fullname") or bench.get("name")
    to_ms = 1000.0
    data = stats.get("data")
    samples = [float(v) * to_ms for v in data] if isinstance(data, list) and data else None
    row.update(
        {
            "median_ms": _scaled(stats.get("median"), to_ms),
            "mean_ms": _scaled(stats.get("mean"), to_ms),
            "min_ms": _scaled(stats.get("min"), to_ms),
            "max_ms": _scaled(stats.get("max"), to_ms),
            "iqr_ms": _scaled(stats.get("iqr"), to_ms),
            "n_samples": len(samples) if samples else stats.get("rounds"),
            "samples_ms": samples,
        }
    )
    if samples:
        row["p20_ms"], row["p80_ms"] = (float(v) for v in np.percentile(samples, [20, 80]))
    row.update(extra)  # the rest of extra_info: unknown columns, kept
    return row


def _scaled(value: Any, factor: float) -> float | None:
    return float(value) * factor if isinstance(value, (int, float)) else None


def _check_required(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    kept: list[dict[str, Any]] = []
    problems: list[str] = []
    for row in rows:
        missing = [key for key in REQUIRED[row["kind"]] if row.get(key) in (None, "")]
        if missing:
            problems.append(
                f"{row.get('source')}:{row.get('line')}: {row['kind']} row without {', '.join(missing)}"
            )
            continue
        kept.append(row)
    return kept, problems


def empty_frame() -> pd.DataFrame:
    """A frame with every declared column and no rows."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in SCHEMA.items()})


def to_frame(rows: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """Rows to a frame with the declared dtypes; values that do not fit a declared dtype become problems."""
    problems: list[str] = []
    if not rows:
        return empty_frame(), problems
    frame = pd.DataFrame.from_records(rows)
    for name, dtype in SCHEMA.items():
        if name not in frame.columns:
            frame[name] = pd.Series([None] * len(frame), dtype=dtype, index=frame.index)
            continue
        if dtype == "object":  # lists and dicts; a column no row has is all-NaN float until cast
            frame[name] = frame[name].astype(object)
            continue
        try:
            if dtype in ("Int64", "float64"):
                numeric = pd.to_numeric(frame[name], errors="coerce")
                bad = numeric.isna() & frame[name].notna()
                if bad.any():
                    for idx in frame.index[bad]:
                        problems.append(
                            f"{frame.at[idx, 'source']}:{frame.at[idx, 'line']}: column {name!r}: "
                            f"expected a number, got {frame.at[idx, name]!r} (set to missing)"
                        )
                if dtype == "Int64":
                    whole = numeric.dropna()
                    if not np.all(np.equal(np.mod(whole.to_numpy(dtype=float), 1), 0)):
                        numeric = numeric.astype("float64")  # non-integral: keep as float rather than lose it
                        frame[name] = numeric
                        continue
                frame[name] = numeric.astype(dtype)
            else:
                frame[name] = frame[name].astype(dtype)
        except (TypeError, ValueError) as exc:  # pragma: no cover - defensive: keep the raw column
            problems.append(f"column {name!r}: cannot convert to {dtype} ({exc}); kept as is")
    ordered = list(SCHEMA) + [c for c in frame.columns if c not in SCHEMA]
    return frame[ordered], problems


def load_results(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> Loaded:
    """Load every results file in ``paths`` (files or directories) into one frame (see the module doc)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files, problems = _expand(paths)
    rows: list[dict[str, Any]] = []
    for path in files:
        got, bad = _read_pytest_benchmark(path) if _is_pytest_benchmark(path) else _read_jsonl(path)
        rows.extend(got)
        problems.extend(bad)
    rows, bad = _check_required(rows)
    problems.extend(bad)
    frame, bad = to_frame(rows)
    problems.extend(bad)
    return Loaded(frame=frame, problems=problems)


def samples_of(row: pd.Series | dict[str, Any]) -> np.ndarray:
    """The raw samples of a timing row as a float array (empty when the row has none)."""
    value = row.get("samples_ms") if hasattr(row, "get") else None
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.empty(0)
    arr = np.asarray(value, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def provenance_summary(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The distinct provenance records of the frame (machine, GPU, versions, commit), for the report."""
    seen: dict[str, dict[str, Any]] = {}
    for prov in frame.get("provenance", pd.Series(dtype=object)):
        if not isinstance(prov, dict):
            continue
        record = {k: v for k, v in prov.items() if k != "time"}
        seen.setdefault(json.dumps(record, sort_keys=True, default=str), record)
    return list(seen.values())
