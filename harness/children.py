"""Worker subprocesses that never outlive the run: the death signal set before ``exec`` and their process group
killed on the way out (``harness.executors.SubprocessExecutor``, ``harness.processes.StreamWorker``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable

__all__ = ["end_group", "worker_preexec"]


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
