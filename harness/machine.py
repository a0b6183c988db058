"""The state of the machine a case runs on, and the framework threads it runs with.

On a shared machine a timing depends on two things besides the code: how busy the cores are (the 1-minute load
against the cores this process may use) and how many threads a framework spreads an op over. A multi-threaded
CPU kernel waits for its slowest worker, so under background load PyTorch's default intra-op threads turn a
0.2 ms call into several milliseconds, while one thread keeps it at 0.2 ms. So a measurement pins the threads
(``pinned_threads``, like ``torch.utils.benchmark``'s ``set_torch_threads``) and records the state before and
after (``machine_state``) and the threads it actually ran with (``threads_in_use``).

* PyTorch: ``torch.set_num_threads`` can change at any time and is restored on exit. The inter-op pool can be
  sized once per process, before any parallel work: it is set when still possible, and left alone otherwise.
* TensorFlow: both pools are fixed when its runtime initialises (the first op). Before that,
  ``pinned_threads("tf", n)`` sets them; after it, only the values already in force are accepted, and any other
  value raises ``ThreadsPinnedError``: such a case must run in a fresh worker process (``--isolate``) started
  with ``thread_env(n)``.

No framework is imported here at module level; ``set_threads`` and ``threads_in_use`` import the one they are
asked about.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = [
    "FRAMEWORKS",
    "ThreadsPinnedError",
    "load_average",
    "machine_state",
    "oversubscribed",
    "pinned_threads",
    "set_threads",
    "thread_env",
    "threads_in_use",
    "usable_cores",
]

FRAMEWORKS: tuple[str, ...] = ("torch", "tf")
# Environment variables that size the thread pools of a process that has not started yet.
THREAD_ENV_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


class ThreadsPinnedError(RuntimeError):
    """The framework's thread pools are already fixed in this process, at other values than the ones asked."""


# --------------------------------------------------------------------------------------------------------------
# Machine state.
# --------------------------------------------------------------------------------------------------------------
def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where affinity is not available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the platform has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def machine_state() -> dict[str, Any]:
    """``{"load_1m": float | None, "usable_cores": int}``: record it before and after a case."""
    return {"load_1m": load_average(), "usable_cores": usable_cores()}


# --------------------------------------------------------------------------------------------------------------
# Threads.
# --------------------------------------------------------------------------------------------------------------
def _check_threads(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads: expected an int >= 1; got {n!r}")
    return n


def _check_framework(framework: Any) -> str:
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework: expected one of {', '.join(map(repr, FRAMEWORKS))}; got {framework!r}")
    return framework


def thread_env(n: int) -> dict[str, str]:
    """Environment variables that give a new worker process ``n`` threads in OpenMP, MKL, OpenBLAS and TF pools.

    Merge them into the worker's environment (``{**os.environ, **thread_env(n)}``); they have no effect on a
    process that is already running.
    """
    value = str(_check_threads(n))
    return {name: value for name in THREAD_ENV_VARS}


def _env_threads(name: str) -> int:
    try:
        return max(0, int(os.environ.get(name, "0")))
    except ValueError:
        return 0


def threads_in_use(framework: str) -> dict[str, Any]:
    """``{"framework", "intra_op", "inter_op"}``: the thread counts the framework runs with now (to record in rows).

    PyTorch reports its pools' sizes. TensorFlow reports its configured values; where none is configured, the
    ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` its runtime reads, and 0 when neither is set (0 means
    TensorFlow's default: about one thread per core).
    """
    if _check_framework(framework) == "torch":
        import torch

        return {"framework": "torch", "intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
    import tensorflow as tf

    threading = tf.config.threading
    return {
        "framework": "tf",
        "intra_op": threading.get_intra_op_parallelism_threads() or _env_threads("TF_NUM_INTRAOP_THREADS"),
        "inter_op": threading.get_inter_op_parallelism_threads() or _env_threads("TF_NUM_INTEROP_THREADS"),
    }


def _set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        try:  # once per process, before any inter-op parallel work; later calls raise
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass


def _set_tf_threads(n: int) -> None:
    import tensorflow as tf

    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(n)
        threading.set_inter_op_parallelism_threads(n)
    except RuntimeError as exc:  # TensorFlow has initialised: the pools are fixed
        now = threads_in_use("tf")
        if now["intra_op"] == n and now["inter_op"] == n:
            return
        raise ThreadsPinnedError(
            f"threads: TensorFlow is already initialised in this process with intra_op={now['intra_op']}, "
            f"inter_op={now['inter_op']} (0: its default), so it cannot run with {n}; run the case in a fresh "
            f"worker process (--isolate) started with harness.machine.thread_env({n})") from exc


def set_threads(framework: str, n: int) -> dict[str, Any]:
    """Give ``framework`` ``n`` intra-op (and, where still possible, inter-op) threads; returns the previous
    ``threads_in_use(framework)``, which ``pinned_threads`` restores.

    Raises ``ValueError`` for a bad ``framework`` or ``n``, and ``ThreadsPinnedError`` (a ``RuntimeError``) when
    TensorFlow has initialised with other values (see the module docstring).
    """
    _check_framework(framework)
    _check_threads(n)
    before = threads_in_use(framework)
    if framework == "torch":
        _set_torch_threads(n)
    else:
        _set_tf_threads(n)
    return before


def _restore(before: dict[str, Any]) -> None:
    if before["framework"] == "torch":
        import torch

        torch.set_num_threads(before["intra_op"])  # the inter-op pool cannot be resized: it stays
        return
    with contextlib.suppress(RuntimeError, ValueError):  # TF initialised inside the block: its pools stay
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(before["intra_op"])
        tf.config.threading.set_inter_op_parallelism_threads(before["inter_op"])


@contextlib.contextmanager
def pinned_threads(framework: str, n: int) -> Iterator[dict[str, Any]]:
    """Run the block with ``framework`` on ``n`` threads; restore the previous intra-op setting on exit.

    Yields ``threads_in_use(framework)`` inside the block. What cannot be restored stays as set: PyTorch's
    inter-op pool, and TensorFlow's pools once the block has initialised TensorFlow (a later
    ``pinned_threads("tf", n)`` with the same ``n`` still succeeds).
    """
    before = set_threads(framework, n)
    try:
        yield threads_in_use(framework)
    finally:
        _restore(before)


def oversubscribed(rows: Any) -> dict[str, Any] | None:
    """``{"cases", "load", "cores"}`` for the timing rows whose load average (before or after) exceeded their
    usable cores, or None when there are none."""
    busy, worst, cores = 0, 0.0, 0
    for row in rows:
        loads = [row.get(key) for key in ("load_before", "load_after") if row.get(key) is not None]
        usable = row.get("usable_cores")
        if loads and usable and max(loads) > usable:
            busy, worst, cores = busy + 1, max(worst, max(loads)), usable
    return {"cases": busy, "load": worst, "cores": cores} if busy else None
