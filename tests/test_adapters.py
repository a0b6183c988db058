"""Conformance of both framework adapters to ``harness.adapters.Adapter``: every member exists with the protocol's
signature and behaves (a tiny case built, checked, timed, measured)."""

from __future__ import annotations

import inspect

import pytest

from harness.adapters import Adapter, CaseBuild, Unavailable, Workload, get_adapter
from harness.cases import Case
from harness.timer import time_fn

MEMBERS = [name for name in vars(Adapter) if not name.startswith("_") and callable(getattr(Adapter, name))]


def _params(fn) -> list[tuple[str, object, bool]]:
    """Names, kinds and whether each parameter has a default (``self`` dropped from the protocol's methods)."""
    params = inspect.signature(fn).parameters.values()
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in params if p.name != "self"]


@pytest.fixture
def adapter(G, framework):
    return get_adapter(framework)


def test_protocol_lists_what_callers_use():
    assert sorted(MEMBERS) == sorted(["devices", "check_device", "sync_fn", "event_factory", "flush_fn",
                                      "peak_memory", "versions", "build_workload"])


@pytest.mark.parametrize("member", MEMBERS)
def test_member_exists_with_the_protocol_signature(adapter, member):
    assert callable(getattr(adapter, member, None)), f"{adapter.__name__} has no {member}"
    assert _params(getattr(adapter, member)) == _params(getattr(Adapter, member)), member


def test_device_members_behave_on_the_cpu(adapter, framework):
    devices = adapter.devices()
    assert "cpu" in devices and set(devices) <= {"cpu", "gpu"}
    adapter.check_device("cpu")
    if "gpu" not in devices:
        with pytest.raises(Unavailable):
            adapter.check_device("gpu")
    assert adapter.sync_fn("cpu") is None  # CPU calls have finished when they return
    assert adapter.event_factory("cpu") is None and adapter.flush_fn("cpu") is None
    peak = adapter.peak_memory(lambda: None, "cpu")
    assert peak is None or (isinstance(peak, int) and peak >= 0)
    assert adapter.versions("cpu")["framework"] == framework


@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwdbwd"])
def test_a_tiny_case_is_built_checked_timed_and_measured(adapter, framework, mode):
    case = Case("dselect_k", framework, "cpu", "eager", mode, "per_example", 8, 4, 8, 2)
    workload = adapter.build_workload(case, {})
    assert isinstance(workload, Workload)
    acc = workload.check()
    assert acc["ok"], acc.get("error")
    assert (acc["max_grad_err"] is None) == (mode == "fwd") and ("fd_grad_err" in acc) == (mode != "fwd")
    assert (workload.setup is not None) == (framework == "torch" and mode != "fwd")  # TF has nothing to reset
    timing = time_fn(workload.fn, sync=workload.sync, warmup_ms=0.0, rep_ms=0.0, min_reps=3, max_reps=3,
                     setup=workload.setup, flush=workload.flush, event_factory=workload.event_factory)
    assert len(timing.samples_ms) == 3 and timing.warmup_reps >= 1 and timing.estimate_ms > 0
    peak = workload.memory()
    assert peak is None if framework == "tf" else peak > 0
    assert workload.compile_ms is None
    assert workload.provenance["framework"] == framework
    assert workload.labels == {"gate_impl": "factorized", "compiler": "xla" if framework == "tf" else "none"}


def test_build_workload_settings_default_to_none(adapter, framework):
    workload = adapter.build_workload(Case("softmax", framework, "cpu", "eager", "fwd", "static", None, None, 4, 2))
    assert workload.flush is None and workload.check()["ok"]
    assert workload.labels == {"gate_impl": "default", "compiler": "none"}


def test_framework_builds_are_case_builds(adapter):
    builds = [obj for obj in vars(adapter).values() if isinstance(obj, type) and issubclass(obj, CaseBuild)
              and obj is not CaseBuild]
    assert len(builds) == 1 and not inspect.isabstract(builds[0])
