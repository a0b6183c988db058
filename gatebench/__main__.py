"""``python -m gatebench COMMAND ...``: the ``gatebench`` command line from a source tree (``PYTHONPATH=.``),
with no install. Where typer or rich is missing (a bare GPU machine), ``run`` still works, as plain lines
(``gatebench.plain``)."""

from __future__ import annotations

import importlib.util
import sys

from harness.env import quiet_frameworks


def main() -> int:
    quiet_frameworks()
    if all(importlib.util.find_spec(name) is not None for name in ("typer", "rich")):
        from gatebench.cli import main as cli_main

        cli_main()
        return 0
    from gatebench.plain import main as plain_main

    return plain_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
