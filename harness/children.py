"""Worker subprocesses that never outlive the run: the death signal set before ``exec`` and their process group
killed on the way out (``harness.executors.SubprocessExecutor``, ``harness.processes.StreamWorker``), and the
lines they answer with (``python -m harness``): a row as ``ROW_MARKER`` and its JSON, ``DONE_MARKER`` after the
rows of an item (``--stream``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["DONE_MARKER", "ROW_MARKER", "end_group", "row_of", "worker_preexec"]

ROW_MARKER = "GATEBENCH_ROW "
DONE_MARKER = "GATEBENCH_DONE"


def row_of(line: str) -> dict[str, Any] | None:
    """The row a worker's stdout line carries (after ``ROW_MARKER``), else None."""
    return json.loads(line[len(ROW_MARKER):]) if line.startswith(ROW_MARKER) else None


def end_group(proc: subprocess.Popen) -> None:
    """Kill a worker's process group (the worker and anything it started) and reap the worker."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        proc.kill()


def worker_preexec(cpus: tuple[int, ...] | None = None) -> Callable[[], None] | None:
    """What the worker runs before ``exec`` (Linux): ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so the kernel kills it
    when the parent dies; if the parent died already, the worker exits; with ``cpus``, the worker is pinned to
    those cores (``sched_setaffinity``). Prepared here, in the parent."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cpus)

    return preexec


_PR_SET_PDEATHSIG = 1
