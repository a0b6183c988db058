"""What the measurement scripts share: an argument parser with ``--out``, provenance, JSON output.

The scripts are run from the repository root as modules, ``python -m scripts.NAME ...`` (the project on the
import path: installed, or ``PYTHONPATH=.``); none of them changes ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def quiet_frameworks() -> None:
    """Quiet TensorFlow's start-up logging before a framework is imported (``harness.env.quiet_frameworks``)."""
    from harness.env import quiet_frameworks as quiet

    quiet()


def parser(
    doc: str | None, *, out_required: bool = True, out_help: str = "JSON file to write"
) -> argparse.ArgumentParser:
    """An ``argparse`` parser described by the first line of ``doc`` (a script's docstring), with ``--out``."""
    description = doc.strip().splitlines()[0] if doc and doc.strip() else None
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, required=out_required, default=None, help=out_help)
    return p


def write_json(
    path: str | os.PathLike[str],
    doc: Mapping[str, Any],
    *,
    extra_provenance: Mapping[str, Any] | None = None,
    indent: int = 1,
) -> Path:
    """Write ``doc`` with its ``provenance`` (``harness.results.provenance(extra_provenance)``: machine, versions,
    commit, time) as JSON to ``path``, creating its folder; returns the path."""
    from harness.results import provenance

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    full = {**doc, "provenance": provenance(extra_provenance)}
    out.write_text(json.dumps(full, indent=indent) + "\n", encoding="utf-8")
    return out
