"""``gatebench report`` and ``gatebench compare``: thin typer commands over ``reports.render`` and
``reports.compare`` (pandas, scipy and matplotlib are imported inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    results: Annotated[
        list[Path], typer.Argument(help="Results files (.jsonl, pytest-benchmark .json) or directories.")
    ],
    out: Annotated[
        Path, typer.Option("-o", "--out", help="Directory to write index.html, summary.md, results.csv.")
    ],
    baseline: Annotated[
        str, typer.Option(help="Baseline gate of the ratios ('gate' or 'gate/impl').")
    ] = "topk",
) -> None:
    """Write a self-contained HTML report (tables, figures, provenance), a Markdown summary and a CSV."""
    from rich.console import Console

    from reports.render import write_report

    console = Console(stderr=True, width=200)
    try:
        paths = write_report(results, out, baseline=baseline)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    for problem in paths.problems:
        console.print(f"[yellow]skipped[/yellow] {problem}")
    console.print(f"{paths.figures} figure(s); summary {paths.summary_md}; data {paths.results_csv}")
    typer.echo(str(paths.index_html))


def compare(
    old: Annotated[Path, typer.Argument(help="Results of the old run: a file or a directory.")],
    new: Annotated[Path, typer.Argument(help="Results of the new run: a file or a directory.")],
    factor: Annotated[
        float, typer.Option(help="Flag a case only when new/old is beyond this factor (and significant).")
    ] = 1.1,
    alpha: Annotated[float, typer.Option(help="Significance level of the Mann-Whitney U test.")] = 0.05,
    only_changed: Annotated[
        bool, typer.Option("--only-changed", help="List only the cases whose mark is not ' '.")
    ] = False,
) -> None:
    """Per-case table of NEW against OLD; exits 1 when any case is significantly slower beyond FACTOR."""
    from rich.console import Console
    from rich.table import Table

    from reports.compare import compare_paths, format_ms, format_ratio

    console = Console(width=200)
    err = Console(stderr=True, width=200)
    try:
        result, problems = compare_paths([str(old)], [str(new)], factor=factor, alpha=alpha)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    for problem in problems:
        err.print(f"[yellow]skipped[/yellow] {problem}")
    table = Table(title=f"gatebench compare (factor {factor:g}, alpha {alpha:g})", show_lines=False)
    for col, justify in (
        ("", "center"),
        ("before", "right"),
        ("after", "right"),
        ("ratio [95% CI]", "right"),
        ("p", "right"),
        ("case", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    style = {"+": "red", "x": "red", "-": "green"}
    shown = result.table if not only_changed else result.table[result.table["mark"] != " "]
    for _, row in shown.iterrows():
        p = f"{row['p_value']:.2g}" if row["p_value"] == row["p_value"] else "-"
        table.add_row(
            row["mark"],
            format_ms(row["before_ms"]),
            format_ms(row["after_ms"]),
            format_ratio(row),
            p,
            str(row["case_id"]),
            style=style.get(row["mark"]),
        )
    console.print(table)
    n_slow, n_fast = len(result.regressions), len(result.improvements)
    if result.failed:
        console.print(
            f"[red]{n_slow} case(s) significantly slower beyond {factor:g}x (or failed)[/red]; "
            f"{n_fast} faster."
        )
        raise typer.Exit(1)
    console.print(f"No case significantly slower beyond {factor:g}x; {n_fast} faster.")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("compare")(compare)
