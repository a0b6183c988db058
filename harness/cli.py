"""The ``gatebench`` command line: a thin typer shell over library functions.

Each sub-command lives beside the library it drives and registers itself here.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    help="Benchmark and compare Mixture-of-Experts gates in PyTorch and TensorFlow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that define `register(app)`; imported here, so `import harness` alone stays light.
_COMMAND_MODULES = ("harness._cli_run", "harness._cli_recover", "reports._cli")

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
