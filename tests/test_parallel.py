"""``--jobs N`` (``harness.parallel.LocalPoolExecutor``): the same metrics as a serial run, a SIGKILLed run that
resumes with every case exactly once, timing cases never beside another case, and the batching and option rules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.env import quiet_frameworks
from harness.executors import InProcessExecutor, SubprocessExecutor, make_executor
from harness.parallel import LocalPoolExecutor, batch_size, plan_units, split_cores
from harness.results import read_rows
from harness.runner import run_suite
from harness.schema import RECOVERY_METRICS
from harness.suite import TimingSettings, load_suite
from harness.tasks import Task

ROOT = Path(__file__).resolve().parent.parent
SMALL = """
name = "par"
kind = "recovery"
gates = ["topk", "dselect_k"]
frameworks = ["torch"]
seeds = {seeds}

[[problems]]
name = "tiny"
experts = 4
k = 2
tasks = 4
clusters = 2
samples = 128
test_samples = 64
steps = {steps}
"""
TIMING = {"gate": "topk", "framework": "torch", "device": "cpu", "impl": "eager", "mode": "fwd",
          "gating": "static", "batch": None, "input_dim": None, "experts": 4, "k": 2, "dtype": "float32"}


def _suite(tmp_path: Path, seeds: int = 3, steps: int = 40) -> Path:
    path = tmp_path / "par.toml"
    path.write_text(SMALL.format(seeds=seeds, steps=steps))
    return path


def _metrics(rows):
    """Each case's metrics as JSON text (NaN, a run that never found the support, equals itself there)."""
    keys = RECOVERY_METRICS + ("support_changes_trace",)
    return {row["case_id"]: json.dumps({key: row.get(key) for key in keys}) for row in rows}


def _recovery_tasks(n: int, steps: int = 600) -> list[Task]:
    return [Task("recovery", "s", None, {"gate": gate, "framework": "torch", "seed": seed, "problem": "p",
                                         "steps": steps}) for seed in range(n) for gate in ("topk", "softmax")]


@pytest.mark.torch
def test_jobs_2_gives_the_same_metrics_per_case_as_serial(gt, tmp_path):
    suite = _suite(tmp_path)
    serial = run_suite(suite, tmp_path / "serial.jsonl", executor=InProcessExecutor())
    parallel = run_suite(suite, tmp_path / "jobs2.jsonl", executor=make_executor(jobs=2))
    assert parallel.count("ok") == serial.count("ok") == 6
    assert _metrics(parallel.rows) == _metrics(serial.rows)
    workers = {row["provenance"]["worker_pid"] for row in parallel.rows}
    assert len(workers) == 2 and os.getpid() not in workers
    assert all(len(row["provenance"]["worker_cores"]) >= 1 for row in parallel.rows)


_DRIVER = """
import sys
from harness.executors import make_executor
from harness.runner import run_suite
run_suite(sys.argv[1], sys.argv[2], resume=len(sys.argv) > 3, executor=make_executor(jobs=2))
"""


@pytest.mark.torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL and spawn workers")
def test_a_sigkilled_jobs_run_resumes_with_every_case_exactly_once(gt, tmp_path):
    suite, results = _suite(tmp_path, seeds=5, steps=150), tmp_path / "out.jsonl"
    cmd = [sys.executable, "-c", _DRIVER, str(suite), str(results)]
    env = quiet_frameworks({**os.environ, "PYTHONPATH": str(ROOT)})
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and len(read_rows(results).rows) >= 2:
                break
            time.sleep(0.02)
        workers = _workers_of(proc.pid)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert workers and _wait_until(lambda: not any(_alive(pid) for pid in workers)), "a worker outlived its driver"
    n_before = len(read_rows(results).rows)
    assert 2 <= n_before < 10
    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = read_rows(results).rows
    counts = Counter(row["case_id"] for row in after)
    assert set(counts) == {task.case_id for task in _plan(suite)} and set(counts.values()) == {1}, counts
    assert all(row["status"] == "ok" for row in after)


def _workers_of(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux ``/proc``)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    return predicate()


def _plan(path: Path) -> list[Task]:
    from harness.runner import plan

    return plan(load_suite(path))


@pytest.mark.torch
def test_timing_cases_never_run_beside_another_case(gt, tmp_path):
    settings = TimingSettings(rounds=1, warmup_ms=2.0, rep_ms=20.0, memory=False)
    recovery = _plan(_suite(tmp_path, seeds=3, steps=40))
    timing = [Task("timing", "t", settings, {**TIMING, "gate": gate}) for gate in ("topk", "softmax")]
    items = [*recovery[:3], timing[0], *recovery[3:], timing[1]]
    rows = [row for _, row in LocalPoolExecutor(2).map(items)]
    assert Counter(row["kind"] for row in rows) == {"recovery": 6, "timing": 2}
    assert all(row["status"] == "ok" for row in rows), [row["error"] for row in rows if row["status"] != "ok"]
    for timed in (row for row in rows if row["kind"] == "timing"):
        for other in rows:
            if other is not timed:
                overlap = min(timed["ended_at"], other["ended_at"]) - max(timed["started_at"], other["started_at"])
                assert overlap <= 0, (timed["case_id"], other["case_id"], overlap)
    recovery_rows = [row for row in rows if row["kind"] == "recovery"]
    overlaps = [min(a["ended_at"], b["ended_at"]) > max(a["started_at"], b["started_at"])
                for a in recovery_rows for b in recovery_rows if a is not b]
    assert any(overlaps), "recovery cases ran two at a time"


def test_recovery_batches_follow_the_cost_and_balance_rule():
    assert batch_size(_recovery_tasks(10), workers=2) == 1  # 600 steps: about 1.2 s, a unit of its own
    assert batch_size(_recovery_tasks(10, steps=150), workers=2) == 3  # about 0.3 s a run
    assert batch_size(_recovery_tasks(2, steps=10), workers=2) == 1  # never fewer than 2 units per worker
    units = plan_units(_recovery_tasks(6, steps=150), workers=2)
    assert [len(unit.items) for unit in units] == [3, 3, 3, 3]
    assert all(len({task.params["gate"] for task in unit.tasks}) == 1 for unit in units)
    timing = Task("timing", "t", TimingSettings(rounds=1), TIMING)
    gpu = Task("timing", "t", TimingSettings(rounds=1), {**TIMING, "device": "gpu"})
    kinds = [unit.resource for unit in plan_units([timing, *_recovery_tasks(1), gpu], workers=2)]
    assert kinds == ["cpu_timing", "recovery", "recovery", "gpu_timing"]


def test_cores_are_split_into_disjoint_shares():
    assert split_cores(2, [0, 1, 2, 3]) == [(0, 2), (1, 3)]
    assert split_cores(3, [5]) == [(5,), (5,), (5,)]


def test_make_executor_checks_its_options(monkeypatch):
    assert isinstance(make_executor(jobs=2), LocalPoolExecutor)
    assert isinstance(make_executor(True, 5.0, jobs=2), LocalPoolExecutor)
    assert isinstance(make_executor(True), SubprocessExecutor)
    for kwargs, message in [({"jobs": 0}, "jobs: expected an integer >= 1; got 0"),
                            ({"executor": "dask"}, "executor: expected one of local, ray; got 'dask'"),
                            ({"address": "auto"}, "address: expected --executor ray"),
                            ({"executor": "ray", "isolate": True}, "isolate: expected no --isolate"),
                            ({"case_timeout_s": 3.0, "jobs": 2}, "case_timeout: expected --isolate")]:
        with pytest.raises(ValueError, match=message):
            make_executor(**kwargs)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ValueError, match=r'executor: expected Ray .*pip install "gatebench\[ray\]".*\.\[ray\]'):
        make_executor(executor="ray")
