"""A Ray worker set-up hook for ``tests/test_ray.py`` (``runtime_env={"worker_process_setup_hook": ...}``): in the
test cluster's workers, a recovery case of the problem ``os_exit`` ends its worker process at once, as a crash or
the out-of-memory killer would. Production code has no such hook; this module is imported only by Ray workers of
the tests' cluster."""

from __future__ import annotations

import os

CRASH_PROBLEM = "os_exit"


def install() -> None:
    from harness.recovery import suite

    original = suite.run_case

    def run_case(params):
        if params.get("problem") == CRASH_PROBLEM:
            os._exit(3)
        return original(params)

    suite.run_case = run_case
