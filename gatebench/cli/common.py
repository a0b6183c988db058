"""What the command modules share: the console."""

from __future__ import annotations

import sys


def console():
    """A rich console; when the output is not a terminal (logs, CI), wide enough for the summary tables."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)
