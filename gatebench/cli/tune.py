"""``gatebench tune``: tune every gate with the same budget, then judge the best configurations on held-out seeds
(``harness.tuning``; the protocol in docs/tuning.md).

``gatebench tune --gate G (repeatable; default: every gate) --framework F --experts N --k K --tasks T --clusters C
--trials M --tune-seeds S --seeds R --out DIR [--json] [--sampler tpe|random] [--seed X] [--resume]``, or a
``kind = "tuning"`` suite file: ``gatebench tune --suite FILE --out DIR``. Runs are rows of ``DIR/<name>.jsonl``
(``--resume`` continues a killed study without redoing its finished runs). Prints the best parameters and the
held-out verdict (a table, or one JSON document with ``--json``); progress and an ETA go to stderr.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gatebench.cli.common import console as _console
from harness.env import quiet_frameworks

_GATE_HELP = "A gate to tune (repeatable; default: every gate the recovery study scores). The baseline is added."


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune(
        gate: Annotated[list[str] | None, typer.Option(help=_GATE_HELP)] = None,
        framework: Annotated[str, typer.Option(help="torch or tf.")] = "torch",
        experts: Annotated[int, typer.Option(help="Number of experts n.")] = 16,
        k: Annotated[int, typer.Option(help="Planted support size k (and the gates' k).")] = 4,
        tasks: Annotated[int, typer.Option(help="Tasks T (static gating).")] = 32,
        clusters: Annotated[int, typer.Option(help="Clusters C of tasks.")] = 8,
        steps: Annotated[int | None, typer.Option(help="Training steps (default: the problem's).")] = None,
        trials: Annotated[int, typer.Option(help="Trials per gate (the same budget for every gate).")] = 20,
        tune_seeds: Annotated[int, typer.Option(help="Tuning seeds per trial (0..S-1).")] = 3,
        seeds: Annotated[int, typer.Option(help="Held-out seeds of the verdict (1000..1000+R-1).")] = 10,
        sampler: Annotated[str, typer.Option(help="Optuna sampler: tpe or random.")] = "tpe",
        seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 0,
        baseline: Annotated[str, typer.Option(help="The gate every other is tested against.")] = "topk",
        max_nnz: Annotated[float | None, typer.Option(
            help="A trial whose gate keeps more experts than this on average fails (no support needed).")] = None,
        name: Annotated[str, typer.Option(help="Study name: the study column and OUT/<name>.jsonl.")] = "tuning",
        out: Annotated[Path, typer.Option(help="Results: a folder (then OUT/<name>.jsonl) or a .jsonl file.")] = Path(
            "results"),
        suite: Annotated[Path | None, typer.Option(help="A kind = \"tuning\" suite file instead of options.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the study in --out.")] = False,
        fresh: Annotated[bool, typer.Option("--fresh", help="Move an existing results file aside first.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    ) -> None:
        """Tune each gate (same number of trials, validation MSE on tuning seeds), then rerun the best of each on
        held-out seeds: mean ± s.e., paired Wilcoxon against the baseline, Holm-corrected."""
        quiet_frameworks()
        from rich.console import Console

        console = Console(stderr=True)
        try:
            if suite is not None:
                from harness.tuning.suite import load_tuning_suite

                config = load_tuning_suite(suite)
            else:
                config = _config(gate or [], framework, experts, k, tasks, clusters, steps, trials, tune_seeds,
                                 seeds, sampler, seed, baseline, name, max_nnz)
            result = _run(config, out, resume, fresh, console)
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(code=2) from None
        if as_json:
            from harness.recovery.run import json_safe

            sys.stdout.write(json.dumps(json_safe(result), indent=1) + "\n")
        else:
            _print(result)


def _config(gates: list[str], framework: str, experts: int, k: int, tasks: int, clusters: int, steps: int | None,
            trials: int, tune_seeds: int, seeds: int, sampler: str, seed: int, baseline: str, name: str,
            max_nnz: float | None):
    from harness.recovery.problem import RecoveryProblem
    from harness.tuning.study import HELDOUT_START, TuningConfig

    for key, value in (("tune-seeds", tune_seeds), ("seeds", seeds)):
        if value < 1:
            raise ValueError(f"{key}: expected an integer >= 1; got {value!r}")
    knobs: dict[str, Any] = {"experts": experts, "k": k, "tasks": tasks, "clusters": clusters}
    if steps is not None:
        knobs["steps"] = steps
    return TuningConfig(
        problem=RecoveryProblem(**knobs), gates=tuple(gates), framework=framework, trials=trials,
        tune_seeds=tuple(range(tune_seeds)), heldout_seeds=tuple(range(HELDOUT_START, HELDOUT_START + seeds)),
        sampler=sampler, seed=seed, baseline=baseline, name=name, max_nnz=max_nnz,
    )


def _run(config, out: Path, resume: bool, fresh: bool, console) -> dict[str, Any]:
    from rich import progress as bars

    from harness.tuning.study import run_tuning

    start = time.perf_counter()
    columns = (bars.TextColumn("{task.description}"), bars.BarColumn(), bars.MofNCompleteColumn(),
               bars.TimeElapsedColumn(), bars.TextColumn("ETA"), bars.TimeRemainingColumn())
    with bars.Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"tuning {config.name} ({config.framework})", total=None)

        def on_plan(total: int, done: int) -> None:
            progress.update(bar, total=total, completed=done)

        def on_row(row: dict[str, Any]) -> None:
            progress.update(bar, advance=1, description=f"{row['gate']} {row['split']} trial {row['trial']}")

        result = run_tuning(config, out, resume=resume, fresh=fresh, on_plan=on_plan, on_row=on_row)
    result["wall_s"] = time.perf_counter() - start
    console.print(f"{config.total_runs} runs in the study; {result['wall_s']:.1f} s -> {result['results']}")
    return result


def _cell(stat: dict[str, float], digits: int = 3) -> str:
    if stat["count"] == 0:
        return "-"
    se = "" if math.isnan(stat["se"]) else f" ± {stat['se']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{se}"


def _test(test: dict[str, Any] | None) -> str:
    if not test:
        return "baseline"
    if test["pairs"] == 0:
        return "-"
    return f"{test['median_diff']:+.3f} (p={test['p_value']:.3g}, Holm {test['p_holm']:.3g})"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in params.items())


def _print(result: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    base = result["baseline"]
    tuned = Table(title=f"best of {result['trials']} trials per gate ({result['sampler']}, seed {result['seed']}): "
                        f"{result['objective']}; tuning seeds {result['tune_seeds']}")
    for column in ("gate", "trials (failed; infeasible)", "best trial", "val MSE", "best parameters",
                   "search space"):
        tuned.add_column(column)
    for gate, g in result["gates"].items():
        best = g["best"] or {}
        tuned.add_row(gate, f"{g['trials']} ({g['failed_trials']}; {g.get('infeasible_trials', 0)})",
                      str(best.get("trial", "-")),
                      f"{best['val_mse']:.4g}" if best else "-", _params(best.get("params", {})), g["space"])
    console.print(tuned)
    seeds = result["heldout_seeds"]
    verdict = Table(title=f"held-out seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}): mean ± s.e.; paired Wilcoxon vs "
                          f"{base} (median difference, p, Holm-corrected p)")
    for column in ("gate", "F1", "exact support", "test MSE", "nnz", f"F1 vs {base}", f"exact vs {base}"):
        verdict.add_column(column)
    for gate, g in result["gates"].items():
        s, t = g["summary"], g["tests"]
        verdict.add_row(gate, _cell(s["f1"]), _cell(s["exact_support_rate"]), _cell(s["test_mse"], 4),
                        _cell(s["nnz"], 2), _test(t.get("f1")), _test(t.get("exact_support_rate")))
    console.print(verdict)
