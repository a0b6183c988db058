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
        Path | None, typer.Option("-o", "--out", help="Directory to write index.html, summary.md, results.csv "
                                                      "(default: report/ beside the first results file).")
    ] = None,
    baseline: Annotated[
        str, typer.Option(help="Baseline gate of the ratios ('gate' or 'gate/impl'): a gate of the loaded rows.")
    ] = "topk",
    history: Annotated[
        list[Path] | None,
        typer.Option(help="asv results folder, or gatebench results files of several commits: a regression-history "
                          "section (value against commit, with its spread). Repeat for several."),
    ] = None,
) -> None:
    """Write a self-contained HTML report (tables, figures, provenance), a Markdown summary and a CSV."""
    from rich.console import Console
    from rich.markup import escape

    from reports.load import load_results
    from reports.render import build_report

    console = Console(stderr=True, width=200)
    if out is None:
        out = default_out(results)
        console.print(f"writing the report to {escape(str(out))} (-o DIR for another folder)", highlight=False)
    try:
        sources = [str(p) for p in results]
        loaded = load_results(sources)
        if loaded.frame.empty:
            detail = "; ".join(loaded.problems[:5])
            raise ValueError(f"paths: expected results files with timing or recovery rows; loaded none from "
                             f"{', '.join(sources)}" + (f" ({detail})" if detail else ""))
        check_baseline(baseline, loaded.frame)
        paths = build_report(loaded, out, baseline=baseline, sources=sources, history=history or ())
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc
    for problem in paths.problems:
        console.print(f"[yellow]skipped[/yellow] {escape(str(problem))}")
    console.print(f"{paths.figures} figure(s); summary {paths.summary_md}; data {paths.results_csv}")
    typer.echo(str(paths.index_html))


def default_out(results: list[Path]) -> Path:
    """``report/`` beside the first results file (inside it when it is a folder)."""
    first = Path(results[0]) if results else Path(".")
    return (first if first.is_dir() else first.parent) / "report"


def check_baseline(baseline: str, frame) -> None:
    """The baseline (``gate`` or ``gate/impl``) must be a gate (and implementation) of the loaded rows."""
    import difflib

    gate, _, impl = baseline.partition("/")
    known = sorted(str(g) for g in frame["gate"].dropna().unique()) if "gate" in frame else []
    if gate not in known:
        close = difflib.get_close_matches(gate, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"baseline: expected a gate of the loaded rows ({', '.join(known) or 'none'}), or "
                         f"'gate/impl'; got {baseline!r}{hint}")
    if impl and "impl" in frame:
        impls = sorted(str(i) for i in frame.loc[frame["gate"] == gate, "impl"].dropna().unique())
        if impls and impl not in impls:
            raise ValueError(f"baseline: expected an implementation of {gate} in the loaded rows "
                             f"({', '.join(impls)}); got {baseline!r}")


_COMPARE_HELP = "\n\n".join([
    "Per-case table of NEW against OLD, for CI.",
    "By default each case is judged relative to its group's Top-k case (--reference; same framework, device, "
    "mode, gating, shape, dtype, timed in the same rounds): ratio = median of NEW's per-round ratios to it / "
    "median of OLD's, with a bootstrap interval resampling each side's rounds. A slow machine or process slows "
    "both and cancels; 'raw' shows the absolute ratio. A reference case is slower when every case of its group "
    "(two or more) reads faster against it. A change that slows every gate alike needs --absolute.",
    "--absolute (and cases with no reference): ratio = median of NEW's per-round medians / median of OLD's "
    "(rows without rounds: of the pooled samples; rows timed in 3 or more processes: Welch t over the processes), "
    "with a bootstrap interval resampling each side's rounds.",
    "Slower when ratio > FACTOR and the interval's low end > 1; with fewer than 3 rounds (or samples) a side, the "
    "ratio alone decides. A case with a noisy side is 'not judged (noisy)' and does not fail unless its interval "
    "lies wholly above FACTOR (relative and across processes: only a load over the cores makes it noisy).",
    "CPU rows record a machine-speed probe timed in every round; 'machine' is NEW's probe time over OLD's. With "
    "--speed-correction each round's timings are divided by it before the ratio is taken ('raw' keeps the "
    "uncorrected ratio).",
    "Exit 0: no regression.",
    "Exit 1: a regression, or a case OLD had ok with a timing is, in NEW, gone, skipped, failed, ok without "
    "timing or not comparable (other threads or device); with --allow-missing these are listed and exit 0.",
    "Exit 2: unusable input, or nothing to compare (no case in common, or OLD timed no case).",
    "Provenance that differs between the sides (machine, CPU, versions, threads, device) is printed first, as a "
    "warning.",
])


def compare(
    old: Annotated[Path, typer.Argument(help="Results of the old run: a file or a directory.")],
    new: Annotated[Path, typer.Argument(help="Results of the new run: a file or a directory.")],
    factor: Annotated[
        float, typer.Option(help="Flag a case only when new/old is beyond this factor (and its interval clears 1).")
    ] = 1.3,
    alpha: Annotated[float, typer.Option(help="1 - the confidence of the intervals (default 0.01: 99%, as a "
                                              "hundred cases are judged at once).")] = 0.01,
    only_changed: Annotated[
        bool, typer.Option("--only-changed", help="List only the cases whose mark is not ' '.")
    ] = False,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="List cases NEW no longer times, but exit 0 for them.")
    ] = False,
    reference: Annotated[
        str, typer.Option(help="Judge each case relative to its group's case of this gate (default topk).")
    ] = "topk",
    absolute: Annotated[
        bool, typer.Option("--absolute", help="Judge absolute times instead (sees a change that slows every gate "
                                              "alike; on a shared VM only well beyond its noise).")
    ] = False,
    speed_correction: Annotated[
        bool, typer.Option("--speed-correction/--no-speed-correction",
                           help="Divide each round's CPU timings by that round's machine-speed probe before "
                                "comparing absolute times (rows without a probe are compared raw). Off by "
                                "default: measured, it did not remove the false regressions it was built for "
                                "(docs/performance.md).")
    ] = False,
) -> None:
    from rich.console import Console

    from reports.compare import compare_paths

    console = Console(width=200)
    err = Console(stderr=True, width=200)
    try:
        result, problems = compare_paths([str(old)], [str(new)], factor=factor, alpha=alpha,
                                         speed=speed_correction, reference=None if absolute else reference)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    for problem in problems:
        err.print(f"[yellow]skipped[/yellow] {problem}")
    if result.provenance:
        console.print("[yellow]warning: the runs differ in provenance (commit and time aside):[/yellow]")
        console.print(_provenance_table(result.provenance))
    console.print(_results_table(result, only_changed))
    speed = result.probe_ratio
    if speed == speed:
        how = ("absolute CPU timings are judged speed-corrected" if speed_correction else
               "absolute timings are judged raw (--speed-correction divides the probe out)")
        console.print(f"Machine speed: NEW's probe took {speed:.2f}x OLD's (median over the cases); {how}.")
    code = result.exit_code(allow_missing=allow_missing)
    console.print(_verdict_line(result, code, allow_missing))
    if code:
        raise typer.Exit(code)


compare.__doc__ = _COMPARE_HELP


def _provenance_table(differences: list[dict]):
    from rich.table import Table

    table = Table()
    for col in ("", "OLD", "NEW"):
        table.add_column(col, justify="left")
    for diff in differences:
        table.add_row(diff["key"], diff["old"], diff["new"], style="yellow")
    return table


def _results_table(result, only_changed: bool):
    from rich.table import Table

    from reports.compare import format_ms, format_ratio, format_units

    factor, level = result.factor, 1.0 - result.alpha
    table = Table(title=f"gatebench compare (factor {factor:g}, {level:.0%} intervals)", show_lines=False)
    for col, justify in (("", "center"), ("before", "right"), ("after", "right"), (f"ratio [{level:.0%} CI]", "right"),
                         ("raw", "right"), ("machine", "right"), ("n (rounds)", "right"), ("p", "right"),
                         ("verdict", "left"), ("method", "left"), ("case", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    style = {"+": "red", "x": "red", "g": "red", "s": "red", "?": "red", "#": "red", "-": "green", "~": "yellow"}
    shown = result.table if not only_changed else result.table[result.table["mark"] != " "]
    for _, row in shown.iterrows():
        p = f"{row['p_value']:.2g}" if row["p_value"] == row["p_value"] else "-"
        change = row["change"] + (f" [{row['flags']}]" if row["flags"] else "")
        raw = f"{row['raw_ratio']:.2f}" if row["raw_ratio"] == row["raw_ratio"] else "-"
        machine = f"{row['speed']:.2f}x" if row["speed"] == row["speed"] else "-"
        table.add_row(row["mark"], format_ms(row["before_ms"]), format_ms(row["after_ms"]), format_ratio(row),
                      raw, machine, format_units(row), p, change, row["method"], str(row["case_id"]),
                      style=style.get(row["mark"]))
    return table


def _verdict_line(result, code: int, allow_missing: bool) -> str:
    factor = result.factor
    n_slow, n_fast, n_missing = len(result.regressions), len(result.improvements), len(result.missing)
    if code == 2:
        return f"[red]error: nothing to compare: {result.nothing_to_compare}[/red]"
    missing = ""
    if n_missing:
        names = ", ".join(str(c) for c in result.missing["case_id"])
        allowed = " (allowed by --allow-missing)" if allow_missing else ""
        missing = f"; {n_missing} case(s) OLD timed are missing in NEW{allowed}: {names}"
    if n_slow:
        return f"[red]{n_slow} case(s) significantly slower beyond {factor:g}x[/red]; {n_fast} faster{missing}."
    head = f"No case significantly slower beyond {factor:g}x; {n_fast} faster"
    return (f"[red]{head}{missing}[/red]." if code else f"{head}{missing}.")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("compare")(compare)
