"""The ``gatebench`` command line: a thin typer shell over library functions, one module per command.

``run.py`` (``run``, ``list``), ``recover.py`` (``recover``), ``report.py`` (``report``, ``compare``),
``targets.py`` (``targets``), ``tune.py`` (``tune``); each
defines ``register(app)``. A new command is a new module here and one line in ``COMMANDS``.
"""

from __future__ import annotations

import typer

from gatebench.cli import recover, report, run, targets, tune

app = typer.Typer(
    help="Benchmark and compare Mixture-of-Experts gates in PyTorch and TensorFlow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMANDS = (run, recover, tune, report, targets)

for _module in COMMANDS:
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
