"""Results files: long-form JSON Lines, one row per case, appended and fsynced as each case finishes.

Every results file of gatebench (timing and recovery suites alike) uses these rows. A row is a flat dict with
the columns declared in ``harness.schema`` (identifying columns, statistics, their dtypes and units), among them
``provenance`` (a dict: machine, CPU, GPU, versions, commit, time). Times are in milliseconds (``*_ms``), memory
in bytes (``*_bytes``).

A crash, an out-of-memory or a SIGKILL between two cases loses nothing; a kill in the middle of a write leaves at
most one partial last line, which the reader reports and skips (and the writer terminates before appending). One
writer at a time: ``ResultsLock`` (``fcntl.flock`` on ``<file>.lock``) is held for a whole run, and a second run
on the same file fails at once naming the holder's pid. A failed write (disk full) is cut back to the last whole
row. Reading checks every row (``harness.schema.row_problem``): unusable rows are reported as ``path:line: what``
and left out, and the newest row of a case (``latest_rows``) is the one that counts.
"""

from __future__ import annotations

import datetime as _dt
import errno
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness.schema import (
    COMMON_KEYS,
    SCHEMA_VERSION,
    STATUSES,
    TIMING_KEYS,
    TIMING_STATS,
    check_values,
    row_kind,
    row_problem,
)

__all__ = [
    "SCHEMA_VERSION", "STATUSES", "COMMON_KEYS", "TIMING_KEYS", "TIMING_STATS", "case_id", "provenance",
    "ResultsWriter", "ResultsLock", "ResultsError", "ResultsLocked", "lock_path", "check_results_path", "ReadResult",
    "read_rows", "latest_rows", "completed_case_ids", "make_row", "row_json", "write_folder",
]

_T = TypeVar("_T")


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
class ResultsError(ValueError):
    """A results file that cannot be checked, locked or written (one clear line: the path and why)."""


class ResultsLocked(ResultsError):
    """Another process holds the lock of the results file."""


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of a results file: ``<name>.lock`` beside it (left in place; its content is the holder's pid)."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def check_results_path(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` can be a results file before any case runs: not a folder, not under a file, in a
    writable folder (created when missing). Raises ``ResultsError`` naming the path and why."""
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"out: {path} is a folder, not a results file; give a .jsonl file or a folder "
                           "whose name does not end in .jsonl")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ResultsError(f"out: {parent} is a file, so {path} cannot be created under it")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"out: cannot create the folder {path.parent}: {exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ResultsError(f"out: cannot write {path}: permission denied")
    return path


class ResultsLock:
    """An exclusive ``fcntl.flock`` on ``<results>.lock``, held from ``acquire`` to ``release`` (or the end of the
    process): a second run on the same results file fails at once, naming the holder's pid."""

    def __init__(self, path: str | os.PathLike[str]):
        self.results = Path(path)
        self.path = lock_path(self.results)
        self._fh: Any = None

    def acquire(self) -> ResultsLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return self
        check_results_path(self.results)
        try:
            fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise ResultsError(f"out: cannot create the lock file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _lock_holder(fh)
            fh.close()
            raise ResultsLocked(f"out: {self.results} is being written by another gatebench run (pid {holder}; "
                                f"lock {self.path}); wait for it to end or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the descriptor releases the flock
            self._fh = None

    def __enter__(self) -> ResultsLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_holder(fh: Any) -> str:
    """The pid written in a lock file by its holder (which writes it just after locking: a short wait)."""
    for _ in range(20):
        fh.seek(0)
        text = fh.read().strip()
        if text:
            return text
        time.sleep(0.05)
    return "unknown"


class ResultsWriter:
    """Append rows to a JSONL file through one descriptor; each ``write`` is flushed and fsynced before it returns.

    ``lock=True`` (default) takes the file's ``ResultsLock`` for the writer's life (``close`` releases it); pass
    False when the caller holds it. A failed write (disk full, permission) is cut back to the rows before it and
    raised as ``ResultsError``: every row written so far stays intact.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock: bool = True):
        self.path = check_results_path(path)
        self.rows_written = 0
        self._lock = ResultsLock(self.path).acquire() if lock else None
        try:
            self._repair_tail()
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            self.close()
            raise ResultsError(f"out: cannot write {self.path}: {exc.strerror or exc}") from None

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
        if self._fd is None:
            raise ResultsError(f"out: {self.path} is closed")
        data = (row_json(row) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, size)  # no partial line after the last whole row
            except OSError:
                pass
            raise ResultsError(f"out: cannot write {self.path}: {exc.strerror or exc}; the {self.rows_written} "
                               "row(s) written before it are intact") from None
        self.rows_written += 1

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
        self._fd = None
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_folder(target: str | os.PathLike[str], write: Callable[[Path], _T], owned: Iterable[str],
                 what: str = "folder") -> _T:
    """Write a folder of outputs whole or not at all: ``write(tmp)`` fills a new temporary folder beside ``target``,
    which then takes ``target``'s place (one atomic exchange where Linux has it); returns what ``write`` returns.

    A write that fails or is killed midway leaves the previous ``target`` as it was, and its temporary folder is
    removed. ``owned``: the names ``write`` may write; when ``target`` holds other files too, they are kept, and
    only the owned names are replaced (each by a rename) or, when not written this time, removed: no stale file
    survives. An OSError is a ``ResultsError`` naming ``target`` and why.
    """
    target = Path(target)
    owned = set(owned)
    try:
        if target.exists() and not target.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise ResultsError(f"out: cannot write the {what} {target}: {exc.strerror or exc}") from None
    try:
        result = write(tmp)
        _put_in_place(tmp, target, owned | {path.name for path in tmp.iterdir()})
    except OSError as exc:
        raise ResultsError(f"out: cannot write the {what} {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _put_in_place(tmp: Path, target: Path, owned: set[str]) -> None:
    if not target.exists():
        os.rename(tmp, target)
        return
    if all(path.name in owned for path in target.iterdir()):
        if not _exchange(tmp, target):
            old = tmp.with_suffix(".old")
            os.rename(target, old)
            os.rename(tmp, target)
            tmp = old
        shutil.rmtree(tmp, ignore_errors=True)  # the previous folder, now at tmp's path
        return
    for name in sorted(owned):
        if (tmp / name).exists():
            os.replace(tmp / name, target / name)
        elif (target / name).is_file():
            (target / name).unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


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
    lines: list[int] = field(default_factory=list)  # the line number of each row in its file


def read_rows(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> ReadResult:
    """Read rows from one or more JSONL files. A line that is not JSON, not a gatebench row, of another schema
    version, without an identifying column or with a wrong-typed or impossible value (``schema.row_problem``) is
    reported in ``problems`` as ``path:line: what`` and left out; none is fatal."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result = ReadResult()
    for path in paths:
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            result.problems.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                result.problems.append(f"{path}:{number}: not JSON ({exc.msg})")
                continue
            problem = row_problem(row)
            if problem:
                result.problems.append(f"{path}:{number}: {problem}")
                continue
            result.rows.append(row)
            result.lines.append(number)
    return result


def latest_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The newest row of each case id (the last one in file order: a resumed run appends its reruns), the
    per-process rows of a case timed in several processes merged into one first (``harness.merge``)."""
    from harness.merge import merge_process_rows

    return {row["case_id"]: row for row in merge_process_rows(rows)}


def completed_case_ids(path: str | os.PathLike[str], *, retry_skipped: bool = False) -> set[str]:
    """Case ids done in ``path``, for ``--resume``: the newest row of the case is ``ok``, or ``skipped`` unless
    ``retry_skipped``. A case whose newest row failed is not done; unusable rows (``read_rows``) do not count."""
    path = Path(path)
    if not path.exists():
        return set()
    done = ("ok",) if retry_skipped else ("ok", "skipped")
    return {cid for cid, row in latest_rows(read_rows(path).rows).items() if row["status"] in done}


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
