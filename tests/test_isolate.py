"""``--isolate`` workers: a per-case time limit, their own process group, and no worker outliving its parent.

The worker here is a stand-in for ``python -m harness``: a shell script (the executor's ``python``) that writes
its pid and sleeps, so that each test runs in about a second and imports no framework.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.executors import InProcessExecutor, SubprocessExecutor, make_executor
from harness.suite import TimingSettings
from harness.tasks import Task

ROOT = Path(__file__).resolve().parent.parent
PARAMS = {"gate": "topk", "framework": "torch", "device": "cpu", "impl": "eager", "mode": "fwd",
          "gating": "static", "batch": None, "input_dim": None, "experts": 4, "k": 2, "dtype": "float32"}
TASK = Task("timing", "iso", TimingSettings(rounds=1), PARAMS)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and PR_SET_PDEATHSIG")


def _hanging_worker(tmp_path: Path) -> tuple[Path, Path]:
    """A fake ``python`` that records its pid, then hangs (``exec`` keeps the pid, and the death signal)."""
    script, pidfile = tmp_path / "hang.sh", tmp_path / "worker.pid"
    script.write_text(f"#!/bin/sh\necho $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}\nexec sleep 60\n")
    script.chmod(0o755)
    return script, pidfile


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_a_hanging_case_is_killed_at_its_time_limit_and_becomes_a_failed_row(tmp_path):
    script, pidfile = _hanging_worker(tmp_path)
    start = time.monotonic()
    [(task, row)] = SubprocessExecutor(python=str(script), timeout_s=0.5).run_one(TASK)
    assert time.monotonic() - start < 10
    assert task is TASK and row["status"] == "failed" and row["case_id"] == TASK.case_id
    assert "ran past its time limit (0.5 s per case) and was killed" in row["error"]
    assert not _alive(int(pidfile.read_text()))


_PARENT = """
import sys
from harness.executors import SubprocessExecutor
from tests.test_isolate import TASK
list(SubprocessExecutor(python=sys.argv[1]).map([TASK]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_worker_does_not_outlive_its_killed_parent(tmp_path, sig):
    """SIGTERM: the parent's handler kills the worker's group on the way out; SIGKILL: the kernel does
    (PR_SET_PDEATHSIG). The worker runs in its own process group either way."""
    script, pidfile = _hanging_worker(tmp_path)
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(script)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(pidfile.exists), parent.stderr.read() if parent.poll() is not None else "no worker"
        worker = int(pidfile.read_text())
        assert os.getpgid(worker) == worker != os.getpgid(parent.pid)
        parent.send_signal(sig)
        assert parent.wait(timeout=10) == -sig if sig == signal.SIGKILL else parent.wait(timeout=10) == 143
        assert _wait_for(lambda: not _alive(worker)), f"worker {worker} outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if pidfile.exists() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_case_timeout_comes_from_the_option_or_the_suite_and_needs_isolate():
    settings = TimingSettings(case_timeout_s=30)
    assert isinstance(make_executor(False, None, settings), InProcessExecutor)
    assert make_executor(True, None, settings).timeout_s == 30.0
    assert make_executor(True, 5.0, settings).timeout_s == 5.0
    assert make_executor(True, None, TimingSettings()).timeout_s is None
    with pytest.raises(ValueError, match="case_timeout: expected --isolate with it"):
        make_executor(False, 5.0, settings)
    with pytest.raises(ValueError, match="case_timeout_s: expected a number of seconds > 0; got -1"):
        make_executor(True, -1, settings)
    with pytest.raises(ValueError, match="settings.case_timeout_s: expected a finite number > 0"):
        TimingSettings.from_json({"case_timeout_s": -1.0})


def test_the_command_line_rejects_case_timeout_without_isolate(tmp_path):
    from typer.testing import CliRunner

    from gatebench.cli import app

    result = CliRunner().invoke(app, ["run", "smoke", "--out", str(tmp_path / "o"), "--case-timeout", "5"])
    assert result.exit_code == 2 and "expected --isolate with it" in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()
