"""What the command modules share: the consoles (the checks a run makes before any case, the "loading ..." lines and
the version live in ``gatebench.plain``, which must import without typer or rich)."""

from __future__ import annotations

import sys


def console():
    """A rich console; when the output is not a terminal (logs, CI), wide enough for the summary tables."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def error_console():
    """A rich console on stderr, for errors and progress."""
    from rich.console import Console

    return Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
