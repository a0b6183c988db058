"""``gatebench compare``: flags a 2x slowdown of one case, stays quiet on an identical or resampled rerun."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from gatebench.cli.report import register
from reports.compare import MARK_FAILED, MARK_SAME, MARK_SLOWER, compare_frames, compare_paths
from reports.load import load_results
from tests.fixtures.synthetic import write_fixture, write_scaled

SLOW_CASE = {"gate": "softmax", "framework": "torch", "mode": "fwd", "batch": 256, "experts": 16}


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("old") / "old.jsonl", recovery=False, corrupt=False)


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    register(app)
    return app


def _run(app, *args):
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def test_identical_rerun_is_quiet(app, old):
    result = _run(app, old, old)
    assert result.exit_code == 0, result.output
    assert "No case significantly slower" in result.output
    comparison, _ = compare_paths([str(old)], [str(old)])
    ok = comparison.table[comparison.table["change"] != "same"]
    assert ok.empty, ok
    assert (comparison.table["ratio"].dropna() == 1.0).all()


def test_resampled_rerun_is_quiet(app, old, tmp_path):
    # A rerun: every case's samples drawn afresh from the same distributions (another seed).
    new = write_fixture(tmp_path / "new.jsonl", seed=7, recovery=False, corrupt=False)
    result = _run(app, old, new, "--factor", "1.1")
    assert result.exit_code == 0, result.output
    comparison, _ = compare_paths([str(old)], [str(new)], factor=1.1)
    assert comparison.regressions.empty


def test_flags_a_2x_slowdown_of_one_case(app, old, tmp_path):
    new = write_scaled(old, tmp_path / "new.jsonl", SLOW_CASE, 2.0)
    result = _run(app, old, new, "--factor", "1.1")
    assert result.exit_code == 1, result.output
    assert "1 case(s) significantly slower" in result.output
    comparison, _ = compare_paths([str(old)], [str(new)], factor=1.1)
    slow = comparison.regressions
    assert len(slow) == 1
    row = slow.iloc[0]
    assert row["mark"] == MARK_SLOWER and row["ratio"] == 2.0 and row["p_value"] < 1e-10
    assert row["ci_low"] > 1.8 and "gate=softmax" in row["case_id"] and "mode=fwd" in row["case_id"]
    assert "experts=16" in row["case_id"] and "batch=256" in row["case_id"]
    # every other case is unchanged
    others = comparison.table[comparison.table["case_id"] != row["case_id"]]
    assert (others["mark"] == MARK_SAME).all()
    # the same slowdown inside a generous factor is not flagged
    assert _run(app, old, new, "--factor", "2.5").exit_code == 0


def test_improvement_is_not_a_failure(app, old, tmp_path):
    new = write_scaled(old, tmp_path / "new.jsonl", SLOW_CASE, 0.5)
    result = _run(app, old, new)
    assert result.exit_code == 0, result.output
    assert "1 faster" in result.output


def test_failed_case_and_missing_cases(old, tmp_path):
    a = load_results(old).frame
    b = a.copy()
    idx = b.index[(b["status"] == "ok")][0]
    b.loc[idx, "status"] = "failed"
    b = b.drop(index=b.index[(b["status"] == "ok")][-1])
    result = compare_frames(a, b)
    assert result.failed and (result.table["mark"] == MARK_FAILED).sum() == 1
    assert (result.table["change"] == "gone").sum() == 1


def test_compare_without_samples_uses_the_ratio(old):
    a = load_results(old).frame
    b = a.copy()
    b["samples_ms"] = None
    b["median_ms"] = b["median_ms"] * 1.5
    result = compare_frames(a, b, factor=1.2)
    assert len(result.regressions) == (a["status"] == "ok").sum() and not result.table["tested"].any()


def test_compare_bad_arguments(app, old, tmp_path):
    a = load_results(old).frame
    with pytest.raises(ValueError, match="factor"):
        compare_frames(a, a, factor=0.9)
    with pytest.raises(ValueError, match="alpha"):
        compare_frames(a, a, alpha=2)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = _run(app, old, empty)
    assert result.exit_code == 2 and "NEW: expected results files with timing rows" in result.output


# ---- compare as a CI gate: synthetic rows with rounds, the exit rules, provenance
import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reports import comparison  # noqa: E402
from reports.compare import (  # noqa: E402
    DEFAULT_FACTOR,
    MARK_INCOMPARABLE,
    MARK_NOT_JUDGED,
    MARK_SKIPPED,
    MARK_UNTIMED,
    provenance_differences,
)
from reports.stats import bootstrap_ratio_ci  # noqa: E402

PROV = {"machine": "vm", "cpu": "Xeon", "python": "3.11.7", "torch": "2.13.0", "commit": "aaa", "time": "t0"}


def _row(name: str, per_round: list[list[float]] | None = None, *, samples=None, status="ok", **extra) -> dict:
    """A timing row of case ``name``: ``per_round`` gives its samples round by round (with ``sample_rounds``),
    ``samples`` without rounds."""
    row = {"schema": 1, "kind": "timing", "suite": "t", "case_id": f"case={name}", "gate": name,
           "framework": "torch", "device": "cpu", "mode": "fwd", "status": status, "threads": 1,
           "provenance": dict(PROV)}
    if per_round is not None:
        samples = [v for values in per_round for v in values]
        row["sample_rounds"] = [r for r, values in enumerate(per_round) for _ in values]
    if samples is not None and len(samples):
        a = np.asarray(samples, dtype=float)
        row.update(samples_ms=list(a), median_ms=float(np.median(a)), n_samples=int(a.size),
                   iqr_ms=float(np.subtract(*np.percentile(a, [75, 25]))))
    row.update(extra)
    return row


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def _quiet(rng, n: int, scale: float = 1.0) -> list[float]:
    return list(scale * rng.lognormal(0.0, 0.01, n))


def _rounds_of(rng, n_rounds: int, per: int, scale: float = 1.0) -> list[list[float]]:
    return [_quiet(rng, per, scale) for _ in range(n_rounds)]


def _write(path, rows: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_round_medians_statistic_known_numbers():
    old = comparison.sample_of(_row("a", [[1.0, 1.0, 5.0], [1.1, 1.1, 0.1], [1.2, 1.2, 1.2]]))
    new = comparison.sample_of(_row("a", [[2.0, 2.0], [2.2, 2.2], [2.4, 2.4], [9.0, 9.0]]))
    got = comparison.round_medians(new, old, seed=3)
    assert got.ratio == pytest.approx(2.3 / 1.1)  # median of [2, 2.2, 2.4, 9] over median of [1, 1.1, 1.2]
    lo, hi = bootstrap_ratio_ci(np.array([2.0, 2.2, 2.4, 9.0]), np.array([1.0, 1.1, 1.2]), seed=3)
    assert (got.ci_low, got.ci_high) == (pytest.approx(lo), pytest.approx(hi))  # resampled rounds, not samples
    assert got.method == comparison.METHOD_ROUND_MEDIANS and got.units == 3
    few = comparison.round_medians(new, comparison.sample_of(_row("a", [[1.0], [1.2]])))
    assert few.method == "judged on the ratio: too few rounds" and math.isnan(few.ci_low)
    assert few.ratio == pytest.approx(2.3 / 1.1)
    pooled = comparison.round_medians(comparison.sample_of(_row("a", samples=[2.0, 2.0])),
                                      comparison.sample_of(_row("a", samples=[1.0, 1.0, 1.0])))
    assert pooled.method == "judged on the ratio: too few samples" and pooled.ratio == 2.0


def test_a_shifted_minute_does_not_regress():
    rng = np.random.default_rng(0)
    old_rounds = _rounds_of(rng, 8, 5)
    new_rounds = [list(np.asarray(r) * (3.0 if i == 3 else 1.0)) for i, r in enumerate(old_rounds)]
    result = compare_frames(_frame([_row("a", old_rounds)]), _frame([_row("a", new_rounds)]), factor=1.3)
    row = result.table.iloc[0]
    assert row["mark"] != MARK_SLOWER and result.exit_code() == 0, row.to_dict()
    assert row["ratio"] == pytest.approx(1.0, rel=0.01) and row["method"] == comparison.METHOD_ROUND_MEDIANS


@pytest.mark.parametrize("with_rounds", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 50])
def test_one_and_a_half_times_slower_fails_whatever_the_samples(n, with_rounds):
    rng = np.random.default_rng(n)
    if with_rounds:
        shape = (n, 1) if n < 50 else (10, 5)
        old, new = _row("a", _rounds_of(rng, *shape)), _row("a", _rounds_of(rng, *shape, scale=1.5))
    else:
        old, new = _row("a", samples=_quiet(rng, n)), _row("a", samples=_quiet(rng, n, 1.5))
    result = compare_frames(_frame([old]), _frame([new]), factor=1.3)
    row = result.table.iloc[0]
    assert row["mark"] == MARK_SLOWER and result.exit_code() == 1, row.to_dict()
    if n < 3:
        assert row["method"].startswith("judged on the ratio: too few")


def _noisy_rounds(scale_per_round: list[float]) -> list[list[float]]:
    return [[s, s, s] for s in scale_per_round]


def test_noisy_rows_are_not_judged_unless_the_interval_is_above_the_factor():
    old = _row("a", _noisy_rounds([1.0] * 8))
    spread = [1.1, 1.35, 1.35, 1.1, 1.35, 1.35, 1.35, 1.35]  # slower, but the interval reaches below 1.3
    loaded = {"load_before": 6.0, "load_after": 6.0, "usable_cores": 2}
    quiet = compare_frames(_frame([old]), _frame([_row("a", _noisy_rounds(spread))]), factor=1.3)
    assert quiet.table.iloc[0]["mark"] == MARK_SLOWER  # without the noise it is a regression
    noisy = compare_frames(_frame([old]), _frame([_row("a", _noisy_rounds(spread), **loaded)]), factor=1.3)
    row = noisy.table.iloc[0]
    assert row["ci_low"] < 1.3 and row["mark"] == MARK_NOT_JUDGED and row["change"] == "not judged (noisy)"
    assert row["flags"] == "noisy" and noisy.exit_code() == 0
    three = compare_frames(_frame([old]), _frame([_row("a", _noisy_rounds([3 * s for s in spread]), **loaded)]),
                           factor=1.3)
    assert three.table.iloc[0]["ci_low"] > 1.3 and three.table.iloc[0]["mark"] == MARK_SLOWER
    assert three.exit_code() == 1


def _suite(rng, names, **extra) -> list[dict]:
    return [_row(name, _rounds_of(rng, 4, 3), **extra) for name in names]


NAMES = [f"c{i}" for i in range(48)]


def test_exit_rules(app, tmp_path):
    rng = np.random.default_rng(5)
    old = _write(tmp_path / "old.jsonl", _suite(rng, NAMES))
    same = _write(tmp_path / "same.jsonl", _suite(rng, NAMES))
    assert _run(app, old, same).exit_code == 0
    # no case in common: nothing to compare is an error
    other = _write(tmp_path / "other.jsonl", _suite(rng, ["z1", "z2"]))
    result = _run(app, old, other)
    assert result.exit_code == 2 and "no case in common" in result.output
    # NEW measured nothing: every case skipped, or ok without a timing
    skipped = _write(tmp_path / "skipped.jsonl", [_row(n, status="skipped") for n in NAMES])
    assert _run(app, old, skipped).exit_code == 1
    assert (compare_paths([str(old)], [str(skipped)])[0].table["mark"] == MARK_SKIPPED).all()
    untimed = _write(tmp_path / "untimed.jsonl", [_row(n) for n in NAMES])
    assert _run(app, old, untimed).exit_code == 1
    assert (compare_paths([str(old)], [str(untimed)])[0].table["mark"] == MARK_UNTIMED).all()
    # 46 of 48 cases gone; with --allow-missing they are listed and the exit is 0
    two = _write(tmp_path / "two.jsonl", _suite(rng, NAMES[:2]))
    assert _run(app, old, two).exit_code == 1
    allowed = _run(app, old, two, "--allow-missing")
    assert allowed.exit_code == 0 and "46 case(s) OLD timed are missing in NEW" in allowed.output
    assert "allowed by --allow-missing" in allowed.output
    # a failed case; new cases never fail
    failed = _write(tmp_path / "failed.jsonl", _suite(rng, NAMES[1:]) + [_row(NAMES[0], status="failed")])
    assert _run(app, old, failed).exit_code == 1
    more = _write(tmp_path / "more.jsonl", _suite(rng, [*NAMES, "extra"]))
    assert _run(app, old, more).exit_code == 0
    # OLD timed nothing
    old_skipped = _write(tmp_path / "old_skipped.jsonl", [_row(n, status="skipped") for n in NAMES])
    result = _run(app, old_skipped, same)
    assert result.exit_code == 2 and "OLD has no case ok with a timing" in result.output
    # usage error
    assert _run(app, old, same, "--factor", "0.5").exit_code == 2


def test_threads_mismatch_is_not_comparable(app, tmp_path):
    rng = np.random.default_rng(6)
    old = _write(tmp_path / "old.jsonl", _suite(rng, ["a", "b"], threads=1))
    new_rows = _suite(rng, ["a"], threads=1) + _suite(rng, ["b"], threads=2)
    new = _write(tmp_path / "new.jsonl", new_rows)
    comparison_, _ = compare_paths([str(old)], [str(new)])
    row = comparison_.table.set_index("case_id").loc["case=b"]
    assert row["mark"] == MARK_INCOMPARABLE and row["change"] == "not comparable (threads 1 vs 2)"
    assert bool(row["missing"]) and np.isnan(row["ratio"])
    result = _run(app, old, new)
    assert result.exit_code == 1 and "not comparable (threads 1 vs 2)" in result.output
    assert _run(app, old, new, "--allow-missing").exit_code == 0


def test_provenance_differences_are_printed_as_a_warning(app, tmp_path):
    rng = np.random.default_rng(7)
    old = _write(tmp_path / "old.jsonl", _suite(rng, ["a"]))
    rows = _suite(rng, ["a"])
    rows[0]["provenance"] = {**PROV, "machine": "box2", "torch": "2.14.0", "commit": "bbb", "time": "t1"}
    new = _write(tmp_path / "new.jsonl", rows)
    diffs = provenance_differences(load_results(old).frame, load_results(new).frame)
    assert diffs == [{"key": "machine", "old": "vm", "new": "box2"}, {"key": "torch", "old": "2.13.0", "new": "2.14.0"}]
    result = _run(app, old, new)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "warning: the runs differ in provenance" in out and "box2" in out and "2.14.0" in out
    assert out.index("warning") < out.index("gatebench compare") and "bbb" not in out
    assert "warning" not in _run(app, old, old).output


def test_cli_default_factor_is_the_library_default(app):
    import inspect

    from gatebench.cli.report import compare

    assert inspect.signature(compare).parameters["factor"].default == DEFAULT_FACTOR == 1.3
    assert inspect.signature(compare_frames).parameters["factor"].default == DEFAULT_FACTOR
    help_text = CliRunner().invoke(app, ["compare", "--help"]).output
    assert "Exit 2" in help_text and "--allow-missing" in help_text


def _probed(name: str, per_round: list[list[float]], probe: list[float], version: int = 1) -> dict:
    return _row(name, per_round, probe_ms=list(probe), probe_version=version, rounds=len(per_round))


def test_speed_corrected_divides_each_sample_by_its_rounds_probe():
    row = _probed("a", [[2.0, 4.0], [3.0]], [2.0, 1.5])
    got = comparison.speed_corrected(row)
    assert list(got.values) == [1.0, 2.0, 2.0] and list(got.rounds) == [0, 0, 1]
    assert comparison.speed_corrected(_row("a", [[2.0]])) is None  # no probe
    assert comparison.speed_corrected({**row, "probe_ms": [2.0]}) is None  # a round without a probe
    assert comparison.speed_corrected({**row, "probe_ms": [2.0, 0.0]}) is None  # not a time


def test_a_whole_group_slowed_by_the_machine_passes_and_slower_code_still_fails(app, tmp_path):
    rng = np.random.default_rng(11)
    names = ["softmax", "topk", "dselect_k"]
    probe = list(rng.lognormal(np.log(0.2), 0.01, 8))
    old = [_probed(n, _rounds_of(rng, 8, 5), probe) for n in names]
    # the second run: the machine ran 1.9x slower for the whole group; the probe, timed in the same rounds, too
    slow_probe = [1.9 * p for p in rng.lognormal(np.log(0.2), 0.01, 8)]
    machine = [_probed(n, _rounds_of(rng, 8, 5, 1.9), slow_probe) for n in names]
    result = compare_frames(_frame(old), _frame(machine), factor=1.3, speed=True, reference=None)
    assert result.exit_code() == 0 and (result.table["mark"] == MARK_SAME).all(), result.table.to_dict("records")
    assert result.table["raw_ratio"].between(1.8, 2.0).all() and result.table["ratio"].between(0.95, 1.05).all()
    assert result.probe_ratio == pytest.approx(1.9, rel=0.03)
    assert result.table["method"].str.endswith("speed-corrected").all()
    # relative to the group's Top-k (the default) the machine cancels without the probe
    assert compare_frames(_frame(old), _frame(machine), factor=1.3).exit_code() == 0
    # absolute timings are judged raw unless corrected, and the probe's move is still shown
    raw = compare_frames(_frame(old), _frame(machine), factor=1.3, reference=None)
    assert raw.exit_code() == 1 and len(raw.regressions) == 3 and raw.probe_ratio == pytest.approx(1.9, rel=0.03)
    assert not raw.table["method"].str.endswith("speed-corrected").any()
    # code 1.5x slower on an unchanged machine: the probe did not move, the regression stands
    code = [_probed("softmax", _rounds_of(rng, 8, 5, 1.5), probe), *machine[1:]]
    slower = compare_frames(_frame(old), _frame(code), factor=1.3, speed=True, reference=None)
    assert list(slower.regressions["case_id"]) == ["case=softmax"]
    # a probe of another version is not a unit of the same speed: compared raw
    other = [{**row, "probe_version": 2} for row in machine]
    assert compare_frames(_frame(old), _frame(other), factor=1.3, speed=True, reference=None).exit_code() == 1
    # the CLI: raw by default, with the machine's speed printed; corrected on request
    old_path, new_path = _write(tmp_path / "old.jsonl", old), _write(tmp_path / "new.jsonl", machine)
    out = _run(app, old_path, new_path, "--absolute")
    assert out.exit_code == 1 and "Machine speed: NEW's probe took 1.9" in out.output
    corrected = _run(app, old_path, new_path, "--absolute", "--speed-correction")
    assert corrected.exit_code == 0, corrected.output
    assert "judged speed-corrected" in corrected.output


def test_rows_read_with_another_clock_are_not_comparable():
    rng = np.random.default_rng(3)
    rounds = _rounds_of(rng, 8, 5)
    wall, cpu, old = _row("a", rounds, clock="wall"), _row("a", rounds, clock="cpu"), _row("a", rounds)
    got = compare_frames(_frame([wall]), _frame([cpu])).table.iloc[0]
    assert got["mark"] == MARK_INCOMPARABLE and got["change"] == "not comparable (clock wall vs cpu)"
    # a CPU row from before the clock column was read with the wall clock
    assert compare_frames(_frame([old]), _frame([cpu])).table.iloc[0]["mark"] == MARK_INCOMPARABLE
    assert compare_frames(_frame([old]), _frame([wall])).table.iloc[0]["mark"] == MARK_SAME
