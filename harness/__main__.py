"""The subprocess worker: ``python -m harness`` reads one task or task group (JSON) on stdin, runs it, and prints
each row as ``GATEBENCH_ROW {json}`` on stdout (``harness.executors.SubprocessExecutor`` starts it and reads
those lines). ``python -m harness --stream`` reads one item per line until stdin ends and prints
``GATEBENCH_DONE`` after the rows of each (``harness.processes.StreamWorker``)."""

from __future__ import annotations

import json
import sys

from harness.env import quiet_frameworks

quiet_frameworks()  # before anything can import TensorFlow

from harness.children import DONE_MARKER, ROW_MARKER  # noqa: E402
from harness.results import row_json  # noqa: E402
from harness.tasks import execute_item  # noqa: E402


def _emit(item: str) -> None:
    for _, row in execute_item(json.loads(item)):
        sys.stdout.write(ROW_MARKER + row_json(row) + "\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--stream"]:
        for line in sys.stdin:
            if line.strip():
                _emit(line)
                sys.stdout.write(DONE_MARKER + "\n")
                sys.stdout.flush()
        return 0
    if argv:
        sys.stderr.write(f"usage: python -m harness [--stream]; got {' '.join(argv)}\n")
        return 2
    _emit(sys.stdin.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
