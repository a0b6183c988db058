"""Interleaved rounds (harness.rounds): schedules, per-round timer budgets, adaptive stopping."""

from __future__ import annotations

import pytest

from harness.rounds import MIN_REPS_PER_ROUND, AdaptiveStop, round_budget, round_timer, schedule

IDS = [f"case{i}" for i in range(8)]


def test_schedule_has_every_case_once_per_round():
    rounds = schedule(IDS, rounds=5, seed=3)
    assert len(rounds) == 5
    for order in rounds:
        assert sorted(order) == sorted(IDS)


def test_schedule_is_reproducible_with_its_seed():
    assert schedule(IDS, 6, seed=7) == schedule(IDS, 6, seed=7)
    assert schedule(IDS, 6, seed=7) != schedule(IDS, 6, seed=8)


def test_schedule_orders_differ_across_rounds():
    rounds = schedule(IDS, rounds=6, seed=0)
    assert len({tuple(order) for order in rounds}) > 1


def test_schedule_edge_cases_and_errors():
    assert schedule([], 2, seed=0) == [[], []]
    assert schedule(["a"], 3, seed=0) == [["a"], ["a"], ["a"]]
    with pytest.raises(ValueError, match="case_ids: expected distinct"):
        schedule(["a", "a"], 2, seed=0)
    with pytest.raises(ValueError, match="rounds: expected an int >= 1"):
        schedule(IDS, 0, seed=0)
    with pytest.raises(ValueError, match="seed: expected an int >= 0"):
        schedule(IDS, 2, seed=-1)


def test_round_budget_and_timer_settings():
    assert round_budget(100.0, 4) == 25.0
    settings = {"warmup_ms": 20.0, "rep_ms": 100.0, "min_reps": 5, "max_reps": 2000}
    first, later = round_timer(settings, rounds=10, round_index=0), round_timer(settings, 10, 3)
    assert first == {"warmup_ms": 20.0, "rep_ms": 10.0, "min_reps": MIN_REPS_PER_ROUND, "max_reps": 200}
    assert later["warmup_ms"] == 2.0 and later["rep_ms"] == 10.0
    # Many rounds: never fewer than MIN_REPS_PER_ROUND samples a round, and max_reps >= min_reps.
    many = round_timer({"warmup_ms": 0, "rep_ms": 1, "min_reps": 1, "max_reps": 10}, rounds=50, round_index=49)
    assert many["min_reps"] == MIN_REPS_PER_ROUND and many["max_reps"] == MIN_REPS_PER_ROUND
    with pytest.raises(ValueError, match="round_index: expected an int < rounds"):
        round_timer(settings, 3, 3)
    with pytest.raises(ValueError, match="settings: expected"):
        round_timer({"rep_ms": 1}, 3, 0)
    with pytest.raises(ValueError, match="total_ms"):
        round_budget(float("nan"), 2)


def test_adaptive_stop_waits_for_min_rounds_then_converges():
    stop = AdaptiveStop(rel_width=0.05, max_s=100.0, min_rounds=3, max_rounds=10)
    narrow = {"a/b": (1.0, 0.99, 1.01)}
    assert not stop.done(narrow, 1.0)
    assert not stop.done(narrow, 2.0)
    assert stop.done(narrow, 3.0) and stop.stop_reason == "converged"


def test_adaptive_stop_continues_while_any_pair_is_wide():
    stop = AdaptiveStop(rel_width=0.05, max_s=100.0, min_rounds=1, max_rounds=10)
    cis = [(1.0, 0.99, 1.01), (2.0, 1.8, 2.2)]  # the second is 20% wide
    assert not stop.done(cis, 1.0, rounds=4) and stop.stop_reason is None
    assert not stop.done([(1.0, float("nan"), float("nan"))], 1.0, rounds=4)  # no interval yet
    assert stop.done([], 1.0, rounds=4)  # nothing to wait for


def test_adaptive_stop_caps_win():
    stop = AdaptiveStop(rel_width=0.01, max_s=5.0, min_rounds=6, max_rounds=8)
    assert stop.done([(1.0, 0.5, 2.0)], 5.0, rounds=2) and stop.stop_reason == "time budget"
    assert stop.done([(1.0, 0.5, 2.0)], 1.0, rounds=8) and stop.stop_reason == "max rounds"


def test_adaptive_stop_reads_round_ratios():
    from reports.rounds import RoundRatio

    stop = AdaptiveStop(rel_width=0.1, max_s=10.0, min_rounds=1, max_rounds=5)
    assert stop.done({"x": RoundRatio(1.0, 0.97, 1.03, 6, "m")}, 0.5)
    assert stop.widest([RoundRatio(2.0, 1.8, 2.2, 6, "m")]) == pytest.approx(0.2)


def test_adaptive_stop_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_rounds: expected an int >= min_rounds"):
        AdaptiveStop(0.05, 10.0, min_rounds=6, max_rounds=5)
    with pytest.raises(ValueError, match="rel_width"):
        AdaptiveStop(0.0, 10.0, 1, 2)
    with pytest.raises(ValueError, match="ratio_cis: expected intervals"):
        AdaptiveStop(0.05, 10.0, 1, 2).done([(1.0, 2.0)], 0.0)
