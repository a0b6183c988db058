"""``--executor ray``: the cases of a run as Ray tasks, on a local cluster or on one started beforehand.

Every Ray task runs one unit (``harness.parallel.plan_units``: a timing task or group alone, or a batch of
recovery runs) through ``harness.parallel.run_unit`` (``harness.tasks.execute_item`` on each item's JSON), as the
other executors do; rows come back to the driver as tasks finish (``ray.wait``), and the driver alone writes the
results file (crash safety and ``--resume`` unchanged).

Resources of a task:

* recovery: ``num_cpus=1`` (one intra-op thread per framework: ``harness.machine.thread_env(1)`` in the workers'
  environment).
* CPU timing: the custom resource ``gatebench_cpu_timing`` (each node declares one:
  ``ray start --resources '{"gatebench_cpu_timing": 1}'``) and every CPU of the smallest such node, so a timing
  task runs alone on its node, never beside another task.
* GPU timing: ``num_gpus=1`` (one at a time per GPU); where the cluster has no GPU, ``num_cpus=1`` (the case
  gives its ``skipped`` row).

``max_retries=1``: a task whose worker process dies is run once more; if it dies again, each of its cases gets a
``failed`` row with the reason. Every row's provenance names the node that ran it (``machine``: its host name,
``ray_node_id``) and ``executor: "ray"``.

Ray is optional and imported only here, when such an executor is made: without it, a ValueError names the extra.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.env import quiet_frameworks
from harness.machine import thread_env, usable_cores
from harness.parallel import Unit, plan_units, run_unit
from harness.tasks import Task, TaskGroup

__all__ = ["RayExecutor", "CPU_TIMING_RESOURCE", "RAY_EXTRA", "import_ray", "worker_env"]

CPU_TIMING_RESOURCE = "gatebench_cpu_timing"
RAY_EXTRA = 'pip install "gatebench[ray]" (from a clone: pip install -e ".[ray]")'
_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the harness package


def import_ray() -> Any:
    """The ``ray`` module, or a ValueError naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError(f"executor: expected Ray for --executor ray ({RAY_EXTRA}); got no module named "
                         f"'ray'") from exc
    return ray


def worker_env() -> dict[str, str]:
    """The environment of the Ray workers: this source tree importable, one thread per framework, TF quiet."""
    path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(quiet_frameworks({**thread_env(1), "PYTHONPATH": path}))


def _ray_task(unit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a Ray worker runs: the unit's rows, each naming this node."""
    import platform

    import ray

    return run_unit(unit, {"executor": "ray", "machine": platform.node(),
                           "ray_node_id": ray.get_runtime_context().get_node_id()})


# A local cluster's address. Not 127.0.0.1: Ray replaces that one (and "localhost") by the machine's own network
# address (``ray._private.services.resolve_ip_for_localhost``), so its processes would listen and talk there;
# another address of the loopback range is kept as given, and every Ray process then binds to it.
LOOPBACK = "127.0.0.2"


class RayExecutor:
    """Run units as Ray tasks. ``address``: a running cluster (``"auto"``, or ``HOST:PORT``); None: a local
    cluster of ``num_cpus`` CPUs (default: the usable cores), bound to the loopback address ``LOOPBACK``, started
    on the first ``map``
    and shut down after it. Where Ray is already initialised in this process, that cluster is used as it is.
    ``startup_s``: how long connecting (or starting the local cluster) took."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.ray = import_ray()
        if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
            raise ValueError(f"jobs: expected an integer >= 1; got {num_cpus!r}")
        self.address = address
        self.num_cpus = num_cpus
        self.startup_s: float | None = None
        self._owned = False

    def connect(self) -> None:
        """Start or join the cluster, unless this process is connected already."""
        ray = self.ray
        if ray.is_initialized():
            return
        start = time.perf_counter()
        common = {"runtime_env": {"env_vars": worker_env()}, "log_to_driver": False, "logging_level": "ERROR"}
        if self.address is None:
            ray.init(num_cpus=self.num_cpus or usable_cores(), include_dashboard=False,
                     _node_ip_address=LOOPBACK, resources={CPU_TIMING_RESOURCE: 1}, **common)
        else:
            ray.init(address=self.address, **common)
        self._owned = True
        self.startup_s = time.perf_counter() - start

    def map(self, tasks: Iterable[Task | TaskGroup]) -> Iterator[tuple[Task, dict[str, Any]]]:
        self.connect()
        ray = self.ray
        try:
            units = plan_units(tasks, workers=max(1, int(ray.cluster_resources().get("CPU", 1))))
            remote = ray.remote(max_retries=1)(_ray_task)
            options = self._options(units)
            refs = {remote.options(**options[unit.resource]).remote(unit.to_json()): unit for unit in units}
            try:
                while refs:
                    done, _ = ray.wait(list(refs), num_returns=1)
                    for ref in done:
                        yield from self._rows(ref, refs.pop(ref))
            finally:
                for ref in refs:  # interrupted: the tasks not yet back are cancelled
                    ray.cancel(ref, force=True)
        finally:
            if self._owned:
                ray.shutdown()
                self._owned = False

    def _rows(self, ref: Any, unit: Unit) -> list[tuple[Task, dict[str, Any]]]:
        try:
            rows = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            reason = (str(exc).strip().splitlines() or [""])[0]
            return unit.failed(f"ray: {type(exc).__name__} (the task was retried once): {reason}"[:2000])
        return unit.match(rows)

    def _options(self, units: Iterable[Unit]) -> dict[str, dict[str, Any]]:
        """Ray options per resource kind; a CPU timing unit on a cluster where no node declares
        ``CPU_TIMING_RESOURCE`` is a ValueError (it would wait for ever)."""
        kinds = {unit.resource for unit in units}
        options: dict[str, dict[str, Any]] = {"recovery": {"num_cpus": 1}}
        has_gpu = self.ray.cluster_resources().get("GPU", 0) >= 1
        options["gpu_timing"] = {"num_gpus": 1, "num_cpus": 1} if has_gpu else {"num_cpus": 1}
        if "cpu_timing" in kinds:
            options["cpu_timing"] = {"num_cpus": _timing_cpus(self.ray.nodes()),
                                     "resources": {CPU_TIMING_RESOURCE: 1}}
        return options


def _timing_cpus(nodes: Iterable[Mapping[str, Any]]) -> float:
    """The CPUs of the smallest live node that declares ``CPU_TIMING_RESOURCE`` (a timing task takes them all)."""
    cpus = [node["Resources"].get("CPU", 1) for node in nodes
            if node.get("Alive") and node.get("Resources", {}).get(CPU_TIMING_RESOURCE, 0) >= 1]
    if not cpus:
        raise ValueError(f"executor: expected a node of the Ray cluster with the resource {CPU_TIMING_RESOURCE} "
                         f"for CPU timing cases (start it with ray start --resources "
                         f"'{{\"{CPU_TIMING_RESOURCE}\": 1}}'); got none")
    return min(cpus)
