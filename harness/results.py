"""Results files: long-form JSON Lines, one row per case, appended and fsynced as each case finishes.

Every results file of gatebench (timing and recovery suites alike) uses these rows. A row is a flat dict with
the columns declared in ``harness.schema`` (identifying columns, statistics, their dtypes and units), among them
``provenance`` (a dict: machine, CPU, GPU, versions, commit, time). Times are in milliseconds (``*_ms``), memory
in bytes (``*_bytes``).

A crash, an out-of-memory or a SIGKILL between two cases loses nothing; a kill in the middle of a write leaves at
most one partial last line, which the reader reports and skips (and the writer terminates before appending).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.schema import (
    COMMON_KEYS,
    KINDS,
    SCHEMA_VERSION,
    STATUSES,
    TIMING_KEYS,
    TIMING_STATS,
    check_values,
    row_kind,
)

__all__ = [
    "SCHEMA_VERSION", "STATUSES", "COMMON_KEYS", "TIMING_KEYS", "TIMING_STATS", "case_id", "provenance",
    "ResultsWriter", "ReadResult", "read_rows", "completed_case_ids", "make_row", "row_json",
]


def case_id(params: Mapping[str, Any]) -> str:
    """A stable, readable identifier of a case from its identifying columns (sorted ``key=value`` pairs)."""
    return ",".join(f"{key}={params[key]}" for key in sorted(params))


# --------------------------------------------------------------------------------------------------------------
# Provenance.
# --------------------------------------------------------------------------------------------------------------
def _git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _static_provenance() -> dict[str, Any]:
    import numpy

    return {
        "machine": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "commit": _git_commit(),
    }


def provenance(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Machine, CPU, versions and commit, plus the time now (UTC) and anything in ``extra``.

    Framework versions and the GPU are added by the framework adapters (``extra``), so that writing a row never
    imports a framework that the case did not use.
    """
    out = dict(_static_provenance())
    out["time"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    if extra:
        out.update(extra)
    return out


# --------------------------------------------------------------------------------------------------------------
# Writing and reading.
# --------------------------------------------------------------------------------------------------------------
class ResultsWriter:
    """Append rows to a JSONL file; each ``write`` is flushed and fsynced before it returns."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()

    def _repair_tail(self) -> None:
        """A kill mid-write can leave a last line without its newline: end it so the next row starts clean."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())

    def write(self, row: Mapping[str, Any]) -> None:
        line = row_json(row) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def row_json(row: Mapping[str, Any]) -> str:
    """A row as one line of JSON (NumPy scalars and arrays as numbers and lists; NaN kept as ``NaN``)."""
    return json.dumps(_jsonable(row), allow_nan=True, separators=(",", ":"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()  # NumPy scalars
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


@dataclass
class ReadResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "path:line: what is wrong", one per skipped line


def read_rows(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> ReadResult:
    """Read rows from one or more JSONL files; corrupt or unknown lines are reported in ``problems``, not fatal."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result = ReadResult()
    for path in paths:
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            result.problems.append(f"{path}: cannot read: {exc}")
            continue
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                result.problems.append(f"{path}:{number}: not JSON ({exc.msg})")
                continue
            if not isinstance(row, dict) or row.get("kind") not in KINDS:
                result.problems.append(f"{path}:{number}: not a gatebench row (no 'kind' timing/recovery)")
                continue
            result.rows.append(row)
    return result


def completed_case_ids(path: str | os.PathLike[str]) -> set[str]:
    """Case ids already recorded in ``path`` (any status), for ``--resume``."""
    path = Path(path)
    if not path.exists():
        return set()
    return {row["case_id"] for row in read_rows(path).rows if "case_id" in row}


def make_row(
    kind: str,
    suite: str,
    params: Mapping[str, Any],
    status: str,
    error: str | None = None,
    extra_provenance: Mapping[str, Any] | None = None,
    **values: Any,
) -> dict[str, Any]:
    """Assemble a row: the case's identifying columns (``params``), its values, and the common columns.

    A timing row always has every statistic column (None where not measured); a value that does not fit its
    declared column (``harness.schema``), an unknown kind or status is a ValueError.
    """
    blank = row_kind(kind).blank()
    if status not in STATUSES:
        raise ValueError(f"status: expected one of {', '.join(STATUSES)}; got {status!r}")
    row: dict[str, Any] = {"schema": SCHEMA_VERSION, "kind": kind, "suite": suite, "case_id": case_id(params)}
    row.update(params)
    row.update(blank)
    row.update(values)
    row["status"], row["error"] = status, error
    check_values(kind, row)
    row["provenance"] = provenance(extra_provenance)
    return row
