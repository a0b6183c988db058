"""The process environment that the frameworks read when they load: the one place that sets it.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` (3: only fatal messages from its C++ runtime) and
``TF_ENABLE_ONEDNN_OPTS`` (0: no oneDNN custom ops, whose round-off differs from run to run) once, when it is
first imported. ``quiet_frameworks()`` sets both, as defaults (a value already set is kept), and must run before
anything imports TensorFlow: entry points (the CLI, the subprocess worker, asv benchmarks, test set-up, scripts)
call it first. Tests and tools that start a subprocess build its environment with ``quiet_frameworks(dict(...))``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["QUIET_FRAMEWORKS", "quiet_frameworks"]

QUIET_FRAMEWORKS: dict[str, str] = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}


def quiet_frameworks(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set ``QUIET_FRAMEWORKS`` in ``environ`` (default: ``os.environ``) where not already set; return it."""
    environ = os.environ if environ is None else environ
    for name, value in QUIET_FRAMEWORKS.items():
        environ.setdefault(name, value)
    return environ
