"""``gatebench run`` and ``gatebench list``: run a suite with a progress bar and a summary table; list what is here.

Frameworks are imported inside the commands (by the runner and adapters), never at import of this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gatebench.cli.common import console as _console
from gatebench.cli.common import error_console
from gatebench.plain import (
    Announcer,
    AnnouncingExecutor,
    case_columns,
    contradictions,
    interrupted_line,
    recovery_label,
    selection,
)
from harness.env import quiet_frameworks
from harness.suite import FILTER_KEYS

_FILTER_HELP = "Only cases with this {} (repeat for several)."


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("list")(list_command)


_HELP = {
    "suite": "A suite TOML file, or the name of one in suites/.",
    "out": "Results folder (the file is OUT/<suite>.jsonl) or a .jsonl path.",
    "resume": "Skip the cases done in the results file (newest row ok or skipped); failed cases run again.",
    "case_timeout": "With --isolate: kill a case's subprocess after this many seconds (a failed row; default: the "
                    "suite's case_timeout_s, else no limit).",
    "dry_run": "List the cases the filters select (a table) and exit: nothing runs, nothing is written.",
    "threads": "Intra-op threads per framework while timing (default: the suite's `threads`, 1).",
    "rounds": "Interleaved rounds: cases compared with each other are timed in turn this many times (default: the "
              "suite's `rounds`, 8).",
    "processes": "Time every case in this many fresh worker processes, the whole suite once in each, one after the "
                 "other (default: the suite's `processes`, 1); compare then uses the processes as its units.",
    "clock": "What CPU samples are read with: wall, cpu (the timing thread's CPU time: a call preempted on a busy "
             "machine does not count its wait; needs --threads 1) or auto (cpu at one thread, else wall; default: "
             "the suite's `clock`, auto).",
    "stop": "fixed (the rounds above) or adaptive (more rounds until each ratio's CI is within the suite's "
            "ci_width).",
    "jobs": "Run this many recovery tasks at a time, each pinned to its share of the cores (timing cases always "
            "run alone). With --executor ray: the local cluster's CPUs.",
    "executor": "local (this machine: in process, --isolate, --jobs) or ray (Ray tasks; the ray extra).",
    "address": "With --executor ray: a running cluster ('auto', or HEAD:PORT); default: a local cluster on "
               "loopback for this run.",
}


def run(
    suite: Annotated[str, typer.Argument(help=_HELP["suite"])],
    out: Annotated[Path, typer.Option(help=_HELP["out"])] = Path("results"),
    resume: Annotated[bool, typer.Option(help=_HELP["resume"])] = False,
    retry_skipped: Annotated[bool, typer.Option(help="With --resume: run the skipped cases again too.")] = False,
    fresh: Annotated[bool, typer.Option(help="Move an existing results file aside and start over.")] = False,
    isolate: Annotated[bool, typer.Option(help="Run each case in its own subprocess.")] = False,
    case_timeout: Annotated[float | None, typer.Option(help=_HELP["case_timeout"])] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Run a suite of more than 100,000 cases.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help=_HELP["dry_run"])] = False,
    gate: Annotated[list[str] | None, typer.Option(help=_FILTER_HELP.format("gate"))] = None,
    framework: Annotated[list[str] | None, typer.Option(help=_FILTER_HELP.format("framework"))] = None,
    device: Annotated[list[str] | None, typer.Option(help=_FILTER_HELP.format("device (cpu, gpu)"))] = None,
    impl: Annotated[list[str] | None, typer.Option(help=_FILTER_HELP.format("implementation"))] = None,
    mode: Annotated[list[str] | None, typer.Option(help=_FILTER_HELP.format("mode (fwd, bwd, fwdbwd)"))] = None,
    gating: Annotated[list[str] | None, typer.Option(help=_FILTER_HELP.format("gating"))] = None,
    dtype: Annotated[list[str] | None, typer.Option(help=_FILTER_HELP.format("dtype"))] = None,
    experts: Annotated[list[int] | None, typer.Option(help=_FILTER_HELP.format("number of experts"))] = None,
    threads: Annotated[int | None, typer.Option(help=_HELP["threads"])] = None,
    rounds: Annotated[int | None, typer.Option(help=_HELP["rounds"])] = None,
    stop: Annotated[str | None, typer.Option(help=_HELP["stop"])] = None,
    clock: Annotated[str | None, typer.Option(help=_HELP["clock"])] = None,
    processes: Annotated[int | None, typer.Option(help=_HELP["processes"])] = None,
    jobs: Annotated[int, typer.Option(help=_HELP["jobs"])] = 1,
    executor: Annotated[str, typer.Option(help=_HELP["executor"])] = "local",
    address: Annotated[str | None, typer.Option(help=_HELP["address"])] = None,
) -> None:
    """Run a suite: check each case against the NumPy reference, time it, append its row as it finishes.

    Exit 0 when no case is failed; 1 when a planned case's newest row is failed (a later --resume runs it
    again); 2 on a bad argument (an unknown filter value, filters that select nothing, --device gpu with no GPU,
    contradictory flags, a bad suite file), a results file that cannot be written or is locked by another run;
    130 when interrupted (the rows written so far are kept)."""
    quiet_frameworks()
    console, err = _console(), error_console()
    _fail_on(err, contradictions(resume=resume, fresh=fresh, retry_skipped=retry_skipped))
    loaded = _load(err, suite, yes, threads=threads, rounds=rounds, stop=stop, clock=clock, processes=processes)
    runner = _executor(err, isolate, case_timeout, loaded.settings, jobs=jobs, executor=executor, address=address)
    filters = {"gate": gate, "framework": framework, "device": device, "impl": impl, "mode": mode,
               "gating": gating, "dtype": dtype, "experts": experts}
    announce = Announcer(lambda line: err.print(line, highlight=False, markup=False))
    if not _select(console, err, loaded, filters, announce, dry_run):
        return
    options = {"isolate": isolate, "case_timeout": case_timeout, "retry_skipped": retry_skipped, "yes": yes,
               "threads": threads, "rounds": rounds, "stop": stop, "clock": clock, "processes": processes,
               "jobs": jobs if jobs != 1 else None,
               "executor": executor if executor != "local" else None, "address": address, **filters}
    summary = _execute(console, err, loaded, (suite, out, options), AnnouncingExecutor(runner, announce),
                       resume=resume, fresh=fresh, retry_skipped=retry_skipped)
    _print_summary(console, summary, loaded.kind)
    if summary.still_failed:
        raise typer.Exit(code=1)


def _select(console, err, loaded, filters: dict, announce: Announcer, dry_run: bool) -> bool:
    """Check the filters (and --device gpu) before anything runs; with ``dry_run`` print the selected cases.
    True when the run goes on."""
    try:
        selected = selection(loaded, filters, announce)
    except ValueError as exc:
        _fail_on(err, str(exc))
    if dry_run:
        console.print(f"{loaded.name}: {len(selected)} of {len(loaded.cases)} case(s) selected (dry run: nothing "
                      "run, nothing written)", highlight=False)
        console.print(_dry_run_table(selected))
    return not dry_run


def _execute(console, err, loaded, where: tuple, executor, **modes: bool):
    """Run with the progress bar; exit 2 on a results file that cannot be used, 130 when interrupted."""
    from harness.results import ResultsError
    from harness.runner import results_path

    suite, out, options = where
    try:
        return _run_with_progress(console, loaded, out, options, executor, **modes)
    except (ResultsError, ValueError) as exc:  # the results file ("out: ..."), or what the runner refused
        _fail_on(err, str(exc))
    except KeyboardInterrupt:
        console.print(interrupted_line(results_path(loaded, out), suite, out, options))
        raise typer.Exit(code=130) from None


def _fail_on(err, message: str | None) -> None:
    """Exit 2 with ``error: MESSAGE`` on stderr, when there is a message."""
    if message:
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
        raise typer.Exit(code=2)


def _load(err, suite: str, yes: bool, **settings: Any):
    """The checked suite with the command line's settings; exit 2 naming the file and key of what is wrong."""
    from harness.suite import WARN_CASES, load_suite

    try:
        loaded = load_suite(suite, yes=yes)
    except ValueError as exc:
        _fail_on(err, f"suite error: {exc}")
    try:
        loaded = loaded.with_settings(**settings)
    except ValueError as exc:
        _fail_on(err, f"--{'/--'.join(k for k, v in settings.items() if v is not None)}: {exc}")
    if len(loaded.cases) > WARN_CASES:
        err.print(f"[yellow]warning:[/yellow] {loaded.name} has {len(loaded.cases):,} cases (over "
                  f"{WARN_CASES:,}); filters (--gate, --framework, ...) run a part of it")
    return loaded


def _executor(err, isolate: bool, case_timeout: float | None, settings, **placement: Any):
    """The executor of the run's flags (``harness.executors.make_executor``: ``jobs``, ``executor``,
    ``address``); exit 2 on flags it refuses."""
    from harness.executors import make_executor

    try:
        return make_executor(isolate, case_timeout, settings, **placement)
    except ValueError as exc:
        _fail_on(err, str(exc))


def _dry_run_table(selected: list[dict[str, Any]]):
    from rich.table import Table

    varying, shared = case_columns(selected)
    table = Table(caption=("all: " + ", ".join(f"{k}={v}" for k, v in shared.items())) if shared else None)
    for name in varying:
        table.add_column(name, no_wrap=True)
    for row in selected:
        table.add_row(*(str(row.get(name)) for name in varying))
    return table


def _run_with_progress(console, loaded, out: Path, options: dict, executor, **modes: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from harness.runner import run_suite

    # One step per row: a timing group's rows come back together, each advances the bar (and the ETA) by one.
    # No auto-refresh: rich would redraw from a thread of this process, running Python (holding the GIL) ten times
    # a second while a case is timed here. The bar is redrawn after each row instead, so nothing else of this
    # process runs while a case is timed. (Its effect on the medians was within the noise when measured:
    # scripts/refresh_interference; under load the wall clock itself is what moves.)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[last]}"), console=console,
                  transient=False, auto_refresh=False) as progress:
        bar = progress.add_task(loaded.name, total=None, last="")

        def on_plan(tasks: list[Any], resumed: int) -> None:  # a row per case and process
            processes = loaded.settings.processes if loaded.settings is not None else 1
            progress.update(bar, total=len(tasks) * processes, refresh=True)
            if resumed:
                console.print(f"resume: {resumed} case(s) already done, {len(tasks)} to run")

        def on_row(row: dict[str, Any]) -> None:
            progress.update(bar, advance=1, last=f"{row['status']}: {_short(row)}", refresh=True)
            if row["status"] == "failed":
                progress.console.print(f"[red]failed[/red] {row['case_id']}: {row.get('error')}")

        filters = {key: options.get(key) for key in FILTER_KEYS}
        return run_suite(loaded, out, executor=executor, filters=filters, on_plan=on_plan, on_row=on_row, **modes)


def _print_summary(console, summary, kind: str) -> None:
    from harness.machine import oversubscribed

    console.print(_summary_table(summary.rows, kind))
    console.print(f"{summary.path}: {len(summary.rows)} run ({summary.count('ok')} ok, {summary.count('failed')} "
                  f"failed, {summary.count('skipped')} skipped), {summary.resumed} already done"
                  + (f"; {summary.still_failed} case(s) still failed" if summary.still_failed else ""))
    busy = oversubscribed(summary.rows)
    if busy:
        console.print(f"[yellow]warning:[/yellow] the machine was oversubscribed while {busy['cases']} case(s) ran "
                      f"(load average up to {busy['load']:.1f} on {busy['cores']} usable core(s)): their timings "
                      "are noisy; the report and compare do not judge them")


def _short(row: dict[str, Any]) -> str:
    if row.get("kind") == "recovery":
        return recovery_label(row)
    if row.get("kind") != "timing":
        return row["case_id"][:60]
    return " ".join(str(row.get(k)) for k in ("gate", "framework", "device", "impl", "mode", "gating"))


def _summary_table(rows: list[dict[str, Any]], kind: str):
    from rich.table import Table

    if kind != "timing":
        return _recovery_table(rows)
    table = Table(title="timing: median and IQR in ms, peak memory in KiB (CPU tf: none)")
    for name in ("gate", "fw", "impl", "mode", "gating", "b,p,n,k", "status", "median", "iqr", "mem"):
        table.add_column(name, justify="right" if name in ("median", "iqr", "mem") else "left", no_wrap=True)
    for row in rows:
        table.add_row(*_timing_cells(row))
    return table


def _recovery_table(rows: list[dict[str, Any]]):
    """Per problem, gate and framework: F1 and exact-support rate (mean +- s.e. over seeds), Wilcoxon vs Top-k."""
    from rich.table import Table

    from harness.recovery.report import summarise_rows

    table = Table(title="recovery: mean ± s.e. over seeds; F1 vs topk: median paired difference (Wilcoxon p)")
    for name in ("problem", "gate", "fw", "seeds", "F1", "exact", "nnz", "vs topk"):
        table.add_column(name, justify="left" if name in ("problem", "gate", "fw") else "right", no_wrap=True)
    for problem, part in summarise_rows(rows).items():
        for cell in part["cells"]:
            test = cell.get("wilcoxon_f1_vs_topk")
            versus = "baseline" if cell["gate"] == "topk" else "-"
            if test:
                versus = f"{test['median_diff']:+.3f} ({test['p_value']:.2g})"
            f1, exact, nnz = cell["f1"], cell["exact_support_rate"], cell["nnz"]
            table.add_row(problem, cell["gate"], cell["framework"], str(cell["seeds"]),
                          f"{f1['mean']:.2f}±{f1['se']:.2f}", f"{exact['mean']:.2f}±{exact['se']:.2f}",
                          f"{nnz['mean']:.1f}", versus)
    failed = [row for row in rows if row["status"] != "ok"]
    for row in failed:
        table.add_row("-", row.get("gate", "?"), row.get("framework", "?"), "-", row["status"], "", "",
                      str(row.get("error") or "")[:60])
    return table


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _timing_cells(row: dict[str, Any]) -> list[str]:
    gating = "static" if row["gating"] == "static" else "per-ex"
    shape = f"{row.get('batch') or '-'},{row.get('input_dim') or '-'},{row['experts']},{row['k']}"
    mem = row.get("peak_mem_bytes")
    return [row["gate"], row["framework"], row["impl"], row["mode"], gating, shape, row["status"],
            _fmt(row.get("median_ms"), ".4f"), _fmt(row.get("iqr_ms"), ".4f"),
            _fmt(None if mem is None else mem / 1024, ".0f")]


def list_command() -> None:
    """List the suites, gates, frameworks and devices available here."""
    quiet_frameworks()
    from rich.table import Table

    import gates
    from harness import cases
    from harness.adapters import Unavailable, framework_installed, get_adapter

    console = _console()
    console.print(_suites_table())
    console.print("gates: " + ", ".join(gates.GATE_NAMES))
    console.print("impls: " + ", ".join(cases.IMPLS) + f" ({', '.join(cases.DSELECT_ONLY_IMPLS)}: dselect_k only; "
                  f"triton: PyTorch on a GPU, {_triton_status()})")
    frameworks = Table(title="frameworks and devices")
    for name in ("framework", "installed", "devices", "version / reason"):
        frameworks.add_column(name)
    for fw in gates.FRAMEWORKS:
        if not framework_installed(fw):
            frameworks.add_row(fw, "no", "-", "not installed")
            continue
        try:
            adapter = get_adapter(fw)
            version = adapter.versions("cpu").get("torch" if fw == "torch" else "tensorflow", "")
            frameworks.add_row(fw, "yes", ", ".join(adapter.devices()), str(version))
        except (Unavailable, ImportError) as exc:
            frameworks.add_row(fw, "broken", "-", str(exc))
    console.print(frameworks)


def _suites_table():
    """Every suite file here: name, kind, case count (timing), file, description; a tuning suite (run by
    ``gatebench tune --suite``) is listed as one, a file that does not load shows its error."""
    from rich.markup import escape
    from rich.table import Table

    from harness.suite import TUNING_KIND, find_suites, load_suite, peek_suite

    suites = Table(title="suites")
    for name in ("name", "kind", "cases", "file", "description"):
        suites.add_column(name)
    paths = {p.resolve(): p for p in find_suites(Path.cwd() / "suites") + find_suites()}
    for path in sorted(paths.values()):
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        try:
            raw = peek_suite(path)
            if raw.get("kind") == TUNING_KIND:
                from harness.tuning.suite import load_tuning_suite

                config = load_tuning_suite(path)
                suites.add_row(config.name, TUNING_KIND, "-", str(shown), escape(str(raw.get("description", "")))
                               + f" (gatebench tune --suite {shown})")
                continue
            if raw.get("kind") == "prediction" and raw.get("trials", 8) != 0:  # tuned: gatebench predict runs it
                from harness.prediction.suite import load_prediction_suite

                name, _ = load_prediction_suite(path)
                suites.add_row(name, "prediction", "-", str(shown), escape(str(raw.get("description", "")))
                               + f" (gatebench predict {shown})")
                continue
            s = load_suite(path)
            count = str(len(s.cases)) if s.kind == "timing" else "-"
            suites.add_row(s.name, s.kind, count, str(shown), escape(s.description))
        except (ValueError, OSError, ImportError) as exc:
            suites.add_row(path.stem, "?", "-", str(shown), f"[red]{escape(str(exc))}[/red]")
    return suites


def _triton_status() -> str:
    """Whether DSelect-k's Triton kernels can be timed here, without importing a framework or Triton."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return "triton not installed here"
    return "triton installed" + ("" if any(Path("/dev").glob("nvidia[0-9]*")) else "; no NVIDIA GPU seen here")
