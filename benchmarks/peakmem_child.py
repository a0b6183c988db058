"""Run in a fresh process by ``bench_gates.PeakMemory``: build one case, call it once to warm up, then print
the adapter's peak extra bytes of one call as JSON (``null`` where the framework has no honest measure).

``python benchmarks/peakmem_child.py '<case params JSON>'``
"""

from __future__ import annotations

import json
import sys

try:
    from harness.env import quiet_frameworks
except ImportError:  # a commit from before harness.env: scripts/asv_commits.sh exports the same variables
    pass
else:
    quiet_frameworks()


def main(argv: list[str]) -> int:
    from harness.adapters import get_adapter
    from harness.cases import Case

    case = Case.from_params(json.loads(argv[0]))
    adapter = get_adapter(case.framework)
    workload = adapter.build_workload(case, {})
    if workload.setup is not None:
        workload.setup()
    workload.fn()
    if workload.setup is not None:
        workload.setup()
    print(json.dumps({"peak_mem_bytes": workload.memory()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
