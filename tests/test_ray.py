"""``--executor ray`` (``harness.ray_executor.RayExecutor``) on a local cluster bound to loopback (127.0.0.2), one
cluster for every test here (a session fixture): the same rows as a serial run, rows naming their node, a task that
kills its worker as a ``failed`` row, and a second driver joining a ``ray start --head`` cluster by address."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.env import quiet_frameworks
from harness.executors import InProcessExecutor, make_executor
from harness.runner import plan, run_suite
from harness.schema import RECOVERY_METRICS
from harness.suite import load_suite
from harness.tasks import Task

ray = pytest.importorskip("ray", reason="Ray is not installed (the ray extra)")

from harness.ray_executor import CPU_TIMING_RESOURCE, LOOPBACK, RayExecutor, worker_env  # noqa: E402
from tests._ray_crash import CRASH_PROBLEM  # noqa: E402
from tests.test_parallel import _suite  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cluster():
    """One local Ray cluster for all the Ray tests: 2 CPUs, loopback only, no dashboard, the crash hook."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address=LOOPBACK, resources={CPU_TIMING_RESOURCE: 1},
             runtime_env={"env_vars": worker_env(), "worker_process_setup_hook": "tests._ray_crash.install"},
             log_to_driver=False, logging_level="ERROR")
    try:
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {LOOPBACK}  # nothing beyond loopback
        yield ray
    finally:
        ray.shutdown()


def _metrics(rows):
    keys = RECOVERY_METRICS + ("support_changes_trace",)
    return {row["case_id"]: json.dumps({key: row.get(key) for key in keys}) for row in rows}


@pytest.mark.torch
def test_ray_gives_the_same_rows_as_serial_each_naming_its_node(gt, cluster, tmp_path):
    suite = _suite(tmp_path)
    serial = run_suite(suite, tmp_path / "serial.jsonl", executor=InProcessExecutor())
    on_ray = run_suite(suite, tmp_path / "ray.jsonl", executor=make_executor(executor="ray"))
    assert on_ray.count("ok") == serial.count("ok") == 6
    assert _metrics(on_ray.rows) == _metrics(serial.rows)
    node = cluster.get_runtime_context().get_node_id()
    for row in on_ray.rows:
        assert row["provenance"]["executor"] == "ray" and row["provenance"]["ray_node_id"] == node
        assert row["provenance"]["machine"]


@pytest.mark.torch
def test_a_task_that_kills_its_worker_becomes_a_failed_row(gt, cluster, tmp_path):
    crash = Task("recovery", "crash", None, {"gate": "topk", "framework": "torch", "seed": 0,
                                             "problem": CRASH_PROBLEM})
    good = plan(load_suite(_suite(tmp_path, seeds=1)))
    rows = {task.case_id: row for task, row in RayExecutor().map([crash, *good])}
    assert rows[crash.case_id]["status"] == "failed"
    assert "retried once" in rows[crash.case_id]["error"] and "ray:" in rows[crash.case_id]["error"]
    assert all(rows[task.case_id]["status"] == "ok" for task in good)


_JOIN = """
import json, sys
from harness.executors import make_executor
from harness.tasks import Task
from tests.test_ray import _tiny_task
import ray
executor = make_executor(executor="ray", address=sys.argv[1])
executor.connect()
cpus = ray.cluster_resources().get("CPU")  # the head's 1 CPU: this driver joined it, not another cluster
rows = [row for _, row in executor.map([_tiny_task()])]
print("ROWS " + json.dumps([cpus, *[[row["status"], row["provenance"]["executor"]] for row in rows]]))
"""


def _tiny_task() -> Task:
    return Task("recovery", "join", None, {"gate": "topk", "framework": "torch", "seed": 0, "problem": "tiny",
                                           "experts": 4, "k": 2, "tasks": 4, "clusters": 2, "samples": 128,
                                           "test_samples": 64, "steps": 20})


@pytest.mark.torch
@pytest.mark.slow
def test_a_second_driver_joins_a_ray_start_head_on_loopback(gt, tmp_path):
    # `ray stop` below ends every Ray process of this machine, the shared cluster's too: leave it first (this test
    # comes last in the file), so that this process is not left connected to a cluster that is gone (Ray then
    # ends the process once its GCS has been unreachable for a minute).
    ray.shutdown()
    env = quiet_frameworks({**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"})
    ray_cli = str(Path(sys.executable).with_name("ray"))
    start = [ray_cli, "start", "--head", "--node-ip-address", LOOPBACK, "--port", "0", "--num-cpus", "1",
             "--include-dashboard", "false", "--disable-usage-stats",
             "--resources", json.dumps({CPU_TIMING_RESOURCE: 1})]
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        joined = subprocess.run([sys.executable, "-c", _JOIN, "auto"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=180)
        assert joined.returncode == 0, joined.stdout[-2000:] + joined.stderr[-3000:]
        line = next(line for line in joined.stdout.splitlines() if line.startswith("ROWS "))
        assert json.loads(line[5:]) == [1.0, ["ok", "ray"]]
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
