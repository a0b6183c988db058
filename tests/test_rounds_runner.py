"""Interleaved rounds in the runner: grouping, the order cases are timed in, samples tagged with their round,
adaptive stopping, failures inside a group, threads and machine state in every row, groups across a process."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from harness import tasks as tasks_module
from harness.executors import InProcessExecutor, SubprocessExecutor
from harness.rounds import schedule
from harness.suite import TimingSettings
from harness.tasks import Task, TaskGroup, execute_group, group_tasks
from harness.timer import Timing

FAST = TimingSettings(warmup_ms=1.0, rep_ms=4.0, min_reps=3, rounds=4, round_seed=7)


def _task(settings: TimingSettings = FAST, **over) -> Task:
    params = dict(gate="topk", framework="torch", device="cpu", impl="eager", mode="fwd", gating="static",
                  batch=None, input_dim=None, experts=8, k=2, dtype="float32")
    params.update(over)
    return Task("timing", "t", settings, params)


def test_group_tasks_groups_cases_compared_with_each_other():
    a, b = _task(gate="topk"), _task(gate="softmax")
    c = _task(gate="topk", mode="fwdbwd")
    d = _task(gate="dselect_k", impl="bitwise")
    items = group_tasks([a, c, b, d])
    assert [type(i) for i in items] == [TaskGroup, TaskGroup]
    assert items[0].tasks == (a, b, d) and items[1].tasks == (c,)
    single = dataclasses.replace(FAST, rounds=1)
    assert group_tasks([_task(single), _task(single, gate="softmax")]) == [_task(single), _task(single, gate="softmax")]
    assert TaskGroup.from_json(items[0].to_json()) == items[0]


class _FakeTimer:
    """Stands in for ``time_fn``: records which case was timed, returns samples from ``ms(case_fn, round)``."""

    def __init__(self, ms):
        self.calls: list[object] = []
        self.ms = ms
        self.round = itertools.count()

    def __call__(self, fn, **kwargs):
        self.calls.append(fn)
        value = self.ms(fn, len(self.calls))
        return Timing((value, value * 1.01, value * 0.99), warmup_reps=2, estimate_ms=value)


@pytest.mark.torch
def test_cases_are_timed_in_the_recorded_shuffled_order_and_samples_keep_their_round(gt, monkeypatch):
    group = [_task(gate=g) for g in ("topk", "softmax", "dselect_k", "hard_concrete")]
    fake = _FakeTimer(lambda fn, i: 0.1)
    monkeypatch.setattr(tasks_module, "time_fn", fake)
    prepared = {}
    real_prepare = tasks_module._prepare

    def spy(task, settings):
        item = real_prepare(task, settings)
        prepared[item.workload.fn] = task.case_id
        return item

    monkeypatch.setattr(tasks_module, "_prepare", spy)
    rows = execute_group(group)
    assert [r["status"] for r in rows] == ["ok"] * 4
    order = [prepared[fn] for fn in fake.calls]
    want = [cid for rnd in schedule([t.case_id for t in group], FAST.rounds, FAST.round_seed) for cid in rnd]
    assert order == want  # every case once per round, in the seeded order
    assert len({tuple(order[i:i + 4]) for i in range(0, 16, 4)}) > 1  # the order changes between rounds
    for row in rows:
        assert row["rounds"] == 4 and row["round_seed"] == 7 and row["stop"] == "fixed"
        assert row["sample_rounds"] == [r for r in range(4) for _ in range(3)]
        assert len(row["samples_ms"]) == 12 and row["warmup_reps"] == 2
        assert row["threads"] == 1 and row["usable_cores"] >= 1 and row["clock"] == "cpu"  # auto, one thread
        assert row["load_before"] is None or row["load_before"] >= 0


@pytest.mark.torch
def test_adaptive_stop_ends_when_ratios_are_tight_and_runs_to_the_cap_when_they_are_not(gt, monkeypatch):
    adaptive = dataclasses.replace(FAST, stop="adaptive", rounds=6, max_rounds=12, ci_width=0.05)
    group = [_task(adaptive, gate="topk"), _task(adaptive, gate="softmax")]
    monkeypatch.setattr(tasks_module, "time_fn", _FakeTimer(lambda fn, i: 0.1))
    rows = execute_group(group)
    assert [r["rounds"] for r in rows] == [6, 6]  # identical ratios every round: converged at the minimum
    noisy = _FakeTimer(lambda fn, i: 0.1 * (1 + (i % 5)))  # the ratio jumps from round to round
    monkeypatch.setattr(tasks_module, "time_fn", noisy)
    rows = execute_group(group)
    assert [r["rounds"] for r in rows] == [12, 12] and all(r["stop"] == "adaptive" for r in rows)


@pytest.mark.torch
def test_a_case_failing_in_a_round_gets_a_failed_row_and_the_others_go_on(gt, monkeypatch):
    group = [_task(gate="topk"), _task(gate="softmax")]
    calls = itertools.count()

    def flaky(fn, **kwargs):
        if next(calls) == 5:
            raise RuntimeError("device lost")
        return Timing((0.1, 0.1, 0.1))

    monkeypatch.setattr(tasks_module, "time_fn", flaky)
    rows = execute_group(group)
    assert sorted(r["status"] for r in rows) == ["failed", "ok"]
    failed = next(r for r in rows if r["status"] == "failed")
    assert "device lost" in failed["error"]


@pytest.mark.torch
def test_a_group_runs_in_one_worker_process_with_the_same_rows_as_in_process(gt):
    group = TaskGroup((_task(gate="topk"), _task(gate="softmax"), _task(gate="softmax", experts=0 + 8, k=9)))
    # the third case is invalid (k > experts): a failed row, and the other two still time
    inproc = dict((t.case_id, r) for t, r in InProcessExecutor().map([group]))
    isolated = dict((t.case_id, r) for t, r in SubprocessExecutor().map([group]))
    assert inproc.keys() == isolated.keys() == {t.case_id for t in group.tasks}
    for cid, row in isolated.items():
        assert row["status"] == inproc[cid]["status"]
        if row["status"] == "ok":
            assert row["rounds"] == FAST.rounds and row["threads"] == 1
            assert sorted(set(row["sample_rounds"])) == list(range(FAST.rounds))


@pytest.mark.torch
def test_cpu_groups_record_the_machine_speed_probe_once_per_round(gt, monkeypatch):
    from harness import probe

    points = itertools.count(1)
    monkeypatch.setattr(tasks_module, "time_probe", lambda clock: float(next(points)))
    monkeypatch.setattr(tasks_module, "time_fn", _FakeTimer(lambda fn, i: 0.1))
    rows = execute_group([_task(gate="topk"), _task(gate="softmax")])
    # per round: a point before the round and one after each of its 2 cases; the round's value is their median
    assert [r["probe_ms"] for r in rows] == [[2.0, 5.0, 8.0, 11.0]] * 2
    assert all(r["probe_version"] == probe.PROBE_VERSION for r in rows)
    from harness.schema import row_problem

    assert row_problem(rows[0]) is None
    assert "probe_ms has 3 entries for 4 rounds" in row_problem({**rows[0], "probe_ms": [1.0, 2.0, 3.0]})


def test_the_probe_is_a_fixed_workload_and_checks_its_reps():
    from harness.probe import probe_workload, time_probe

    assert probe_workload() == probe_workload()
    assert time_probe(1) > 0
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="reps: expected an integer >= 1"):
            time_probe(bad)
