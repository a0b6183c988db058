"""``gatebench targets``: performance targets (a TOML list, ``suites/targets/kernels.toml``) evaluated on results
files, a thin typer command over ``reports.targets.run_targets``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def targets(
    results: Annotated[
        list[Path], typer.Argument(help="kernels-suite results (.jsonl); for timer targets, a timing-fidelity JSON.")
    ],
    out: Annotated[Path, typer.Option("--out", help="JSON file to write: every target met / missed / not measured.")],
    targets_file: Annotated[
        Path | None, typer.Option("--targets", help="Targets TOML (default: suites/targets/kernels.toml).")
    ] = None,
    bandwidth_gbs: Annotated[
        float | None,
        typer.Option(help="Device copy bandwidth (GB/s) for the memory-floor targets; measured on CUDA when omitted."),
    ] = None,
) -> None:
    """Evaluate performance targets; exit 0 when the file is written (met or not), 2 on unusable input."""
    from reports.targets import DEFAULT_TARGETS, run_targets

    code = run_targets(results, targets_file or DEFAULT_TARGETS, out, bandwidth_gbs=bandwidth_gbs)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("targets")(targets)
