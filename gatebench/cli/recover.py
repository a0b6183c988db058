"""``gatebench recover``: expert recovery on planted-expert problems (see ``harness.recovery``).

Three uses:

- one gate and framework over seeds: ``gatebench recover --gate dselect_k --framework torch --experts 16 --k 4
  --tasks 32 --clusters 8 --seeds 10 [--json]`` (``--json``: one JSON document with per-seed and mean metrics,
  mean F1 under ``f1``);
- the suite: ``gatebench recover --suite suites/recovery.toml --out results.jsonl [--resume]``, run by the
  generic runner (``harness.runner.run_suite``, as ``gatebench run`` does): one row per case, appended and fsynced
  as it finishes; ``--resume`` skips the case ids already in the file, ``--fresh`` moves an existing file aside,
  and without either an existing non-empty file is an error;
- a summary of results rows: ``gatebench recover --report results.jsonl [--json]``.

Frameworks are imported inside the command, only when a run needs them; each framework runs on one intra-op
thread (``harness.recovery.run.limit_threads``, shared with ``gatebench run``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from gatebench.cli.common import console as _console
from gatebench.plain import Announcer, AnnouncingExecutor, recovery_label
from gates import FRAMEWORKS, GATE_NAMES
from harness.env import quiet_frameworks

_QUICK_HELP = ("Small problem for a smoke run (8 experts, k=2, 8 tasks in 4 clusters, 150 steps, 512 samples) for "
               "the options not given.")
_GATE_HELP = ", ".join(GATE_NAMES[:-1]) + f" or {GATE_NAMES[-1]}."
_FRAMEWORK_HELP = " or ".join(FRAMEWORKS) + "."
# The single run's problem size when neither the option nor --quick gives it.
DEFAULTS = {"experts": 16, "k": 4, "tasks": 32, "clusters": 8}


def register(app: typer.Typer) -> None:
    @app.command("recover")
    def recover(
        gate: Annotated[str, typer.Option(help=_GATE_HELP)] = "dselect_k",
        framework: Annotated[str, typer.Option(help=_FRAMEWORK_HELP)] = "torch",
        experts: Annotated[int | None, typer.Option(help="Number of experts n (default 16).")] = None,
        k: Annotated[int | None, typer.Option(help="Planted support size k (and the gates' k; default 4).")] = None,
        tasks: Annotated[int | None, typer.Option(help="Tasks T (static gating; 1 for per_example; default 32).")
                         ] = None,
        clusters: Annotated[int | None, typer.Option(
            help="Clusters C: of tasks (static) or of inputs (per_example; default 8).")] = None,
        seeds: Annotated[int, typer.Option(help="Number of seeds (0..S-1).")] = 10,
        steps: Annotated[int | None, typer.Option(help="Training steps (default: the problem's).")] = None,
        gating: Annotated[str, typer.Option(help="static (multi-task) or per_example.")] = "static",
        experts_mode: Annotated[str, typer.Option(help="known (fixed planted experts) or learned.")] = "known",
        input_dim: Annotated[int | None, typer.Option(help="Input width p.")] = None,
        samples: Annotated[int | None, typer.Option(help="Training examples.")] = None,
        noise: Annotated[float | None, typer.Option(help="Target noise standard deviation.")] = None,
        expert_correlation: Annotated[float | None, typer.Option(help="Expert correlation, [0, 1).")] = None,
        lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
        entropy_reg: Annotated[float | None, typer.Option(help="DSelect-k entropy weight.")] = None,
        l0_reg: Annotated[float | None, typer.Option(help="Hard concrete L0 weight.")] = None,
        gamma: Annotated[float | None, typer.Option(help="DSelect-k smooth-step width.")] = None,
        baseline: Annotated[str | None, typer.Option(help="Also run this gate (one of the above); paired Wilcoxon.")
                            ] = None,
        quick: Annotated[bool, typer.Option("--quick", help=_QUICK_HELP)] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
        suite: Annotated[Path | None, typer.Option(help="Run this recovery suite file instead of one gate.")] = None,
        out: Annotated[Path | None, typer.Option(
            help="Results of --suite: a .jsonl file, or a folder (then OUT/<suite name>.jsonl).")] = None,
        resume: Annotated[bool, typer.Option(
            "--resume", help="With --suite: skip cases done in --out (newest row ok or skipped).")] = False,
        fresh: Annotated[bool, typer.Option(
            "--fresh", help="With --suite: move an existing --out aside (*.bak) and start over.")] = False,
        report: Annotated[Path | None, typer.Option(help="Summarise this recovery results file instead.")] = None,
    ) -> None:
        """Train gates on planted-expert problems and score how well they recover the planted supports."""
        quiet_frameworks()
        from rich.console import Console

        console = Console(stderr=True)
        try:
            _check_flags(suite=suite, out=out, resume=resume, fresh=fresh, report=report)
            if report is not None:
                _report(report, as_json)
            elif suite is not None:
                _suite(suite, out, resume, fresh, console)
            else:
                knobs = {"gating": gating, "experts_mode": experts_mode}
                optional = {"experts": experts, "k": k, "tasks": tasks, "clusters": clusters,
                            "steps": steps, "input_dim": input_dim, "samples": samples, "noise": noise,
                            "expert_correlation": expert_correlation, "lr": lr, "entropy_reg": entropy_reg,
                            "l0_reg": l0_reg, "gamma": gamma}
                problem = _problem(gate, framework, baseline, seeds, quick, knobs, optional)
                _single(problem, gate, framework, seeds, baseline, as_json, console)
        except ValueError as exc:
            from rich.markup import escape

            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(code=2) from None


def _check_flags(**given) -> None:
    """Flags that contradict each other, or that the chosen use ignores, are refused (ValueError)."""
    if given["resume"] and given["fresh"]:
        raise ValueError("--fresh: expected either --resume (continue --out) or --fresh (move it aside and start "
                         "over); got both")
    if given["suite"] is None:
        ignored = [f"--{name}" for name in ("out", "resume", "fresh") if given[name]]
        if ignored:
            raise ValueError(f"{ignored[0]}: expected --suite with it (a single run writes no results file); got "
                             f"{' '.join(ignored)} without --suite")
    if given["suite"] is not None and given["report"] is not None:
        raise ValueError("--report: expected either --suite (run a suite) or --report (summarise a results file); "
                         "got both")


def _problem(gate: str, framework: str, baseline: str | None, seeds: int, quick: bool, knobs: dict,
             optional: dict):
    """The checked problem of a single run: the knobs, then each option given on the command line; an option not
    given takes QUICK's value with --quick, else its default (``DEFAULTS``, else the problem's). Whatever the
    source, the problem checks every value."""
    from harness.recovery.problem import QUICK, RecoveryProblem
    from harness.recovery.run import check_framework, check_gate

    check_gate(gate)
    check_framework(framework)
    if baseline is not None:
        check_gate(baseline)
    if isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"seeds: expected an integer >= 1; got {seeds!r}")
    fallback = {**DEFAULTS, **(QUICK if quick else {})}
    knobs = {**knobs, **fallback}
    knobs.update({key: value for key, value in optional.items() if value is not None})
    return RecoveryProblem(**knobs)


def _single(problem, gate: str, framework: str, seeds: int, baseline: str | None, as_json: bool, console) -> None:
    from rich.progress import Progress
    from rich.table import Table

    from harness.recovery.run import METRICS, json_safe, run_seeds

    total = seeds * (2 if baseline else 1)
    Announcer(lambda line: console.print(line, highlight=False, markup=False))(framework)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{gate} / {framework} / {seeds} seed(s)", total=total)
        result = run_seeds(problem, gate, framework, list(range(seeds)), baseline=baseline,
                           progress=lambda: progress.advance(task))
    if as_json:
        sys.stdout.write(json.dumps(json_safe(result), indent=1) + "\n")
        return
    table = Table(title=f"{gate} ({result['selection']}) / {framework}: mean ± s.e. over {seeds} seeds")
    table.add_column("metric")
    table.add_column(gate)
    if baseline:
        table.add_column(baseline)
    for name in METRICS:
        cells = [result["mean"][name]] + ([result["baseline"]["mean"][name]] if baseline else [])
        table.add_row(name, *[f"{c['mean']:.4g} ± {c['se']:.2g} (n={c['count']})" for c in cells])
    out = _console()
    out.print(table)
    if baseline:
        w = result["baseline"]["wilcoxon_f1"]
        out.print(f"Wilcoxon signed-rank, F1 {gate} - {baseline}: median difference "
                        f"{w['median_diff']:+.3f}, p = {w['p_value']:.3g} ({w['pairs']} seeds)")


def _suite(path: Path, out: Path | None, resume: bool, fresh: bool, console) -> None:
    """Run a recovery suite file through the generic runner (in this process), with a progress bar."""
    import time

    from rich.progress import Progress

    from harness.executors import InProcessExecutor
    from harness.results import read_rows
    from harness.runner import results_path, run_suite
    from harness.suite import load_suite

    if out is None:
        raise ValueError("out: expected a results file for --suite (e.g. --out results/recovery.jsonl); got none")
    loaded = load_suite(path)
    if loaded.kind != "recovery":
        raise ValueError(f"suite: expected a recovery suite (kind = \"recovery\"); {path} has kind {loaded.kind!r}"
                         " (run it with gatebench run)")
    start = time.perf_counter()
    executor = AnnouncingExecutor(InProcessExecutor(), Announcer(
        lambda line: console.print(line, highlight=False, markup=False)))
    try:
        with Progress(console=console) as progress:
            bar = progress.add_task(f"recovery suite {loaded.name}", total=None)
            summary = run_suite(loaded, out, resume=resume, fresh=fresh, executor=executor,
                                on_plan=lambda tasks, resumed: progress.update(bar, total=len(tasks)),
                                on_row=lambda row: progress.update(bar, advance=1, description=(
                                    f"{loaded.name}: {recovery_label(row)}")))
    except KeyboardInterrupt:
        results = results_path(loaded, out)
        kept = len(read_rows(results).rows) if results.exists() else 0
        console.print(f"interrupted: {kept} rows kept in {results}; continue with: gatebench recover --suite {path}"
                      f" --out {out} --resume")
        raise typer.Exit(code=130) from None
    console.print(f"{summary.count('ok')} ok, {summary.count('failed')} failed, {summary.resumed} already done; "
                  f"{time.perf_counter() - start:.1f} s -> {summary.path}")
    if summary.still_failed:
        console.print(f"{summary.still_failed} case(s) still failed; --resume runs them again")
        raise typer.Exit(code=1)


def _report(path: Path, as_json: bool) -> None:
    from harness.recovery.report import markdown, summarise_rows
    from harness.recovery.run import json_safe
    from harness.results import latest_rows, read_rows

    result = read_rows(path)
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)
    summary = summarise_rows(list(latest_rows(result.rows).values()))  # a rerun's row replaces the old one
    if not summary:
        raise ValueError(f"report: no ok recovery rows in {path}")
    if as_json:
        sys.stdout.write(json.dumps(json_safe(summary), indent=1) + "\n")
    else:
        sys.stdout.write(markdown(summary) + "\n")
