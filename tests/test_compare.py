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
