"""``gatebench predict SUITE --out DIR [--framework F ...] [--resume] [--json FILE]``: the tuned prediction protocol
on the digits benchmark (``harness.prediction``; ``docs/prediction.md``).

One study per framework and gating of the ``kind = "prediction"`` suite: every gate tuned with the same budget on
the validation split, its best trial retrained on the held-out seeds and scored on the test split
(``harness.prediction.study.run_study``). Rows go to ``DIR/<study>.jsonl`` as each run ends; ``--resume`` reuses
the runs already there. Progress is on stderr, each study's table (``harness.prediction.report.table``) on
stdout; ``--json`` writes every study's verdict to a file. A suite with ``trials = 0`` also runs under
``gatebench run``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.env import quiet_frameworks


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict(
        suite: Annotated[str, typer.Argument(help="A kind = \"prediction\" suite: a TOML file or a suite name.")],
        out: Annotated[Path, typer.Option(help="Folder of the rows (one JSONL file per study).")],
        framework: Annotated[list[str] | None, typer.Option(
            help="Only the studies of this framework (repeatable).")] = None,
        resume: Annotated[bool, typer.Option(help="Reuse the runs already in the files.")] = False,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write every study's verdict to this JSON "
                                                                     "file.")] = None,
    ) -> None:
        """Tune every gate with the same budget, judge it on held-out seeds, print the tables (docs/prediction.md).

        Exit 0 when every study ran; 2 on a suite or results file that cannot be used.
        """
        quiet_frameworks()
        studies, name = _studies(suite, framework)
        start, results = time.perf_counter(), []
        for study in studies:
            try:
                results.append(_run(study, out, resume, start))
            except ValueError as exc:
                _fail(str(exc))
        _finish(name, results, json_out, time.perf_counter() - start)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _studies(suite: str, frameworks: list[str] | None) -> tuple[list[Any], str]:
    """The suite's studies (only those of ``frameworks`` when given); exit 2 naming what is wrong."""
    from harness.prediction.suite import load_prediction_suite
    from harness.suite import resolve_suite

    try:
        name, studies = load_prediction_suite(resolve_suite(suite))
    except ValueError as exc:
        _fail(f"suite error: {exc}")
    known = sorted({s.framework for s in studies})
    unknown = [f for f in frameworks or [] if f not in known]
    if unknown:
        _fail(f"--framework: expected one of {', '.join(known)} (the frameworks of suite {name!r}); got "
              f"{', '.join(unknown)}")
    return [s for s in studies if not frameworks or s.framework in frameworks], name


def _run(study: Any, out: Path, resume: bool, start: float) -> dict[str, Any]:
    from harness.prediction.report import table
    from harness.prediction.study import run_study

    def progress(row: dict, done: int, total: int) -> None:
        typer.echo(f"[{time.perf_counter() - start:7.1f} s] {done}/{total} {row['gate']} {row['framework']} "
                   f"{row['split']} seed {row['seed']}: {row['status']} acc {row.get('acc_mean')}", err=True)

    result = run_study(study, out, resume=resume, on_row=progress)
    typer.echo(f"\n{study.name} ({len(study.gates)} gates, {study.trials} trials each, "
               f"{len(study.heldout_seeds)} held-out seeds; rows: {result['results']})\n")
    typer.echo(table(result))
    return result


def _finish(name: str, results: list[dict[str, Any]], json_out: Path | None, wall_s: float) -> None:
    from harness.prediction.study import write_json

    suite = {"suite": name, "wall_s": wall_s, "studies": results}
    if json_out is not None:
        try:
            write_json(suite, json_out)
        except OSError as exc:
            _fail(f"--json: cannot write {json_out}: {exc}")
        typer.echo(f"verdicts: {json_out}", err=True)
    else:
        typer.echo(json.dumps({"suite": name, "wall_s": wall_s}))
