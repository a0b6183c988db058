"""The subprocess worker: ``python -m harness`` reads one task or task group (JSON) on stdin, runs it, and prints
each row as ``GATEBENCH_ROW {json}`` on stdout (``harness.executors.SubprocessExecutor`` starts it and reads
those lines)."""

from __future__ import annotations

import json
import sys

from harness.env import quiet_frameworks

quiet_frameworks()  # before anything can import TensorFlow

from harness.executors import ROW_MARKER  # noqa: E402
from harness.results import row_json  # noqa: E402
from harness.tasks import execute_item  # noqa: E402


def main() -> int:
    for _, row in execute_item(json.loads(sys.stdin.read())):
        sys.stdout.write(ROW_MARKER + row_json(row) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
