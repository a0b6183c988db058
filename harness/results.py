"""Results files: long-form JSON Lines, one row per case, appended and fsynced as each case finishes.

Every results file of gatebench (timing and recovery suites alike) uses these rows. A row is a flat dict with
the columns below plus ``provenance`` (a dict: machine, CPU, GPU, versions, commit, time). Times are in
milliseconds (``*_ms``), memory in bytes (``*_bytes``).

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

SCHEMA_VERSION = 1

# Columns that identify a timing case, in order.
TIMING_KEYS: tuple[str, ...] = (
    "gate",
    "framework",
    "device",
    "impl",
    "mode",
    "gating",
    "batch",
    "input_dim",
    "experts",
    "k",
    "dtype",
)
# Statistics of a timing row (milliseconds unless named otherwise).
TIMING_STATS: tuple[str, ...] = (
    "median_ms",
    "iqr_ms",
    "p20_ms",
    "p80_ms",
    "mean_ms",
    "min_ms",
    "max_ms",
    "n_samples",
    "samples_ms",
    "peak_mem_bytes",
    "compile_ms",
    "max_abs_err",
)
# Columns common to every row.
COMMON_KEYS: tuple[str, ...] = ("schema", "kind", "suite", "case_id", "status", "error", "provenance")
STATUSES: tuple[str, ...] = ("ok", "failed", "skipped")


def case_id(params: Mapping[str, Any]) -> str:
    """A stable, readable identifier of a case from its parameters (sorted ``key=value`` pairs)."""
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
        line = json.dumps(_jsonable(row), allow_nan=True, separators=(",", ":")) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


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
            if not isinstance(row, dict) or row.get("kind") not in ("timing", "recovery"):
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
    """Assemble a row: the case's parameters, its values, and the common columns."""
    if kind not in ("timing", "recovery"):
        raise ValueError(f"kind: expected 'timing' or 'recovery'; got {kind!r}")
    if status not in STATUSES:
        raise ValueError(f"status: expected one of {', '.join(STATUSES)}; got {status!r}")
    row: dict[str, Any] = {"schema": SCHEMA_VERSION, "kind": kind, "suite": suite, "case_id": case_id(params)}
    row.update(params)
    row.update(values)
    row["status"], row["error"] = status, error
    row["provenance"] = provenance(extra_provenance)
    return row
