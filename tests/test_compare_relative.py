"""``gatebench compare`` relative to each group's Top-k: a slow machine cancels, one slower gate is caught, a slower
reference is caught by its group, cases without a reference fall back to absolute times."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from gatebench.cli.report import register
from harness.results import ResultsWriter, make_row
from harness.tasks import GROUP_KEYS as TASK_GROUP_KEYS
from reports.compare import MARK_FASTER, MARK_SAME, MARK_SLOWER, compare_frames
from reports.relative import GROUP_KEYS, ReferenceIndex, reference_consensus, relative_ratios

BASE = dict(framework="torch", device="cpu", impl="eager", mode="fwd", gating="static", batch=None, input_dim=None,
            experts=16, k=4, dtype="float32")
COSTS = {"topk": 0.030, "softmax": 0.020, "dselect_k": 0.045, "hard_concrete": 0.025}


def _run(seed: int, *, machine: float = 1.0, slower: dict[str, float] | None = None, rounds: int = 8,
         gates=tuple(COSTS), **over) -> pd.DataFrame:
    """One run: every round has its own machine speed (shared by all cases of the round), each case a few
    samples around its cost."""
    rng = np.random.default_rng(seed)
    speed = machine * rng.uniform(0.7, 1.6, rounds)  # a shared VM: every round of the run at its own speed
    rows = []
    for gate in gates:
        cost = COSTS[gate] * (slower or {}).get(gate, 1.0)
        samples, marks = [], []
        for r in range(rounds):
            values = cost * speed[r] * rng.normal(1.0, 0.01, 5)
            samples += values.tolist()
            marks += [r] * 5
        params = {**BASE, **over, "gate": gate}
        rows.append(make_row("timing", "t", params, "ok", samples_ms=samples, sample_rounds=marks,
                             median_ms=float(np.median(samples)), iqr_ms=0.001, rounds=rounds, threads=1,
                             clock="cpu"))
    return pd.DataFrame(rows)


def _marks(comparison) -> dict[str, str]:
    table = comparison.table
    return {cid.split("gate=")[1].split(",")[0]: mark for cid, mark in zip(table["case_id"], table["mark"],
                                                                             strict=True)}


def test_group_keys_are_the_harness_groups():
    assert GROUP_KEYS == TASK_GROUP_KEYS


def test_a_machine_twice_as_slow_fails_absolute_times_but_not_relative_ones():
    old, new = _run(0), _run(1, machine=2.0)
    relative = compare_frames(old, new)
    assert relative.exit_code() == 0 and set(_marks(relative).values()) == {MARK_SAME}
    assert (relative.table["raw_ratio"] > 1.5).all()  # the absolute ratio, shown for information
    assert compare_frames(old, new, reference=None).exit_code() == 1


def test_one_gate_slower_against_the_others_is_caught():
    old, new = _run(0), _run(1, machine=1.5, slower={"softmax": 1.5})
    got = compare_frames(old, new)
    assert _marks(got) == {"topk": MARK_SAME, "softmax": MARK_SLOWER, "dselect_k": MARK_SAME,
                           "hard_concrete": MARK_SAME}
    row = got.regressions.iloc[0]
    assert row["ratio"] == pytest.approx(1.5, rel=0.05) and row["ci_low"] > 1.0
    assert row["method"] == "relative to topk: bootstrap over rounds" and got.exit_code() == 1


def test_a_slower_reference_is_caught_by_every_case_of_its_group_reading_faster():
    old, new = _run(0), _run(1, machine=0.8, slower={"topk": 1.6})
    got = compare_frames(old, new)
    marks = _marks(got)
    assert marks["topk"] == MARK_SLOWER and {marks[g] for g in ("softmax", "dselect_k", "hard_concrete")} == {
        MARK_FASTER}
    topk = got.table[got.table["mark"] == MARK_SLOWER].iloc[0]
    assert topk["ratio"] == pytest.approx(1.6, rel=0.05) and topk["method"].startswith("reference: 3 of 3")
    same = compare_frames(old, _run(1, slower={"softmax": 0.5}))  # only one gate faster: no consensus
    assert _marks(same)["topk"] == MARK_SAME


def test_cases_without_a_reference_in_their_group_are_judged_on_absolute_times():
    old = pd.concat([_run(0), _run(0, gates=("softmax",), experts=64)])
    new = pd.concat([_run(1), _run(1, gates=("softmax",), experts=64, slower={"softmax": 3.0})])
    table = compare_frames(old, new).table
    alone = table[table["case_id"].str.contains("experts=64")].iloc[0]
    assert not alone["method"].startswith("relative") and alone["mark"] == MARK_SLOWER


def test_an_implementation_the_reference_lacks_is_judged_against_its_eager_case():
    rows = _run(0).to_dict("records")
    index = ReferenceIndex(rows, "topk")
    bitwise = {**rows[2], "impl": "bitwise"}
    assert index.of(bitwise)["impl"] == "eager" and index.of(rows[0]) is None  # rows[0] is topk itself


def test_relative_ratios_need_rounds_in_common_and_few_rounds_are_judged_on_the_ratio():
    rows = _run(0).to_dict("records")
    assert relative_ratios({**rows[1], "sample_rounds": None}, rows[0]) is None
    assert relative_ratios(rows[1], rows[0]).size == 8
    old, new = _run(0, rounds=2), _run(1, rounds=2, slower={"softmax": 1.5})
    row = compare_frames(old, new).regressions.iloc[0]
    assert row["method"] == "relative to topk: ratio only, too few rounds" and not row["tested"]


def test_reference_consensus_needs_two_cases_all_faster():
    assert reference_consensus(["-", "-"], [0.5, 0.8], "-") == pytest.approx(1.625)  # median of 2 and 1.25
    assert reference_consensus(["-"], [0.5], "-") is None
    assert reference_consensus(["-", " "], [0.5, 0.9], "-") is None


def test_an_unknown_reference_gate_is_an_error_naming_the_gates():
    with pytest.raises(ValueError, match=r"reference: expected a gate of the timing rows .*got 'softmx' "
                                         r"\(did you mean 'softmax'\?\)"):
        compare_frames(_run(0), _run(1), reference="softmx")


def test_the_command_line_judges_relative_by_default_and_absolute_on_request(tmp_path):
    paths = {}
    for name, frame in (("old", _run(0)), ("new", _run(1, machine=2.0))):
        paths[name] = tmp_path / f"{name}.jsonl"
        with ResultsWriter(paths[name]) as writer:
            for row in frame.to_dict("records"):
                writer.write(row)
    app = typer.Typer()
    register(app)
    relative = CliRunner().invoke(app, ["compare", str(paths["old"]), str(paths["new"])])
    assert relative.exit_code == 0, relative.output
    assert "relative to topk" in relative.output
    absolute = CliRunner().invoke(app, ["compare", str(paths["old"]), str(paths["new"]), "--absolute"])
    assert absolute.exit_code == 1, absolute.output
    other = CliRunner().invoke(app, ["compare", str(paths["old"]), str(paths["new"]), "--reference", "softmax"])
    assert other.exit_code == 0 and "relative to softmax" in other.output
    bad = CliRunner().invoke(app, ["compare", str(paths["old"]), str(paths["new"]), "--reference", "nope"])
    assert bad.exit_code == 2 and "reference: expected a gate" in bad.output


def test_the_back_to_back_script_compares_runs_already_made_three_ways(tmp_path):
    import json

    from scripts import compare_backtoback

    runs = {"quiet1": _run(0), "quiet2": _run(1, machine=1.7), "quiet3": _run(2), "loaded1": _run(3, machine=2.0),
            "loaded2": _run(4, machine=1.6), "planted": _run(5, slower={"softmax": 1.6})}
    for name, frame in runs.items():
        with ResultsWriter(tmp_path / f"{name}.jsonl") as writer:
            for row in frame.to_dict("records"):
                writer.write(row)
    out = tmp_path / "summary.json"
    assert compare_backtoback.main(["--compare-only", "--work", str(tmp_path), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    by_what = {(c["old"], c["new"]): c for c in summary["comparisons"]}
    assert set(by_what[("quiet1", "quiet2")]) >= {"relative", "absolute", "corrected"}
    assert all(c["relative"]["exit_code"] == 0 for key, c in by_what.items() if key[1] != "planted")
    assert by_what[("quiet1", "quiet2")]["absolute"]["exit_code"] == 1  # the machine, 1.7x slower
    planted = by_what[("quiet3", "planted")]
    assert planted["relative"]["planted_flagged"] == 1 and planted["relative"]["others_flagged"] == 0


def test_noise_drift_reads_recorded_runs_again_with_per_process_rows_merged(tmp_path):
    import json

    from scripts import noise_drift

    paths = {}
    for i, name in enumerate(("quiet1", "quiet2", "loaded1", "loaded2")):
        paths[name] = tmp_path / f"{name}.jsonl"
        with ResultsWriter(paths[name]) as writer:
            for process in (0, 1):  # each case timed in two processes: a row each
                for row in _run(10 * i + process, gates=("topk", "softmax"), rounds=4).to_dict("records"):
                    writer.write({**row, "process": process, "processes": 2, "run_id": name})
    out = tmp_path / "drift.json"
    out.write_text(json.dumps({"runs": {name: {"path": str(path)} for name, path in paths.items()},
                               "provenance": {"provenance": {}, "state": {}}}))
    assert noise_drift.main(["--reread", "--out", str(out)]) == 0
    table = json.loads(out.read_text())["ratios"]
    [(label, entry)] = table.items()
    assert label.startswith("softmax/eager vs topk") and entry["drift"] < 1.1  # 0.020 / 0.030 in every run
    assert all(abs(v - 2 / 3) < 0.05 for v in entry["runs"].values())
