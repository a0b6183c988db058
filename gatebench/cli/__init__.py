"""The ``gatebench`` command line: a thin typer shell over library functions, one module per command.

``run.py`` (``run``, ``list``), ``recover.py`` (``recover``), ``predict.py`` (``predict``), ``report.py``
(``report``, ``compare``), ``targets.py`` (``targets``), ``tune.py`` (``tune``); each
defines ``register(app)``. A new command is a new module here and one line in ``COMMANDS``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gatebench.cli import predict, recover, report, run, targets, tune

app = typer.Typer(
    help="Benchmark and compare Mixture-of-Experts gates in PyTorch and TensorFlow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMANDS = (run, recover, predict, tune, report, targets)

for _module in COMMANDS:
    _module.register(app)


def _print_version(value: bool) -> None:
    if value:
        from gatebench.plain import version

        typer.echo(f"gatebench {version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version of gatebench and exit.")] = False,
) -> None:
    """Benchmark and compare Mixture-of-Experts gates in PyTorch and TensorFlow."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
