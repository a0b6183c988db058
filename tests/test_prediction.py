"""The multi-task digits benchmark: the generator (deterministic, disjoint pools), the model's first step identical
in PyTorch and TensorFlow, a small study end to end (tuning, held-out runs, verdict, resume) and the suite format."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gates import GATE_NAMES
from harness.prediction.data import DigitsSpec, make_digits, overlap_fraction
from harness.prediction.problem import PredictionProblem, init_params

pytest.importorskip("sklearn", reason="scikit-learn is not installed (the prediction extra)")

TINY = {"train": 128, "val": 64, "test": 64, "steps": 2, "batch": 16, "eval_every": 1, "experts": 4, "k": 2,
        "expert_hidden": 8, "expert_out": 4, "tower_hidden": 4}


def test_generator_is_deterministic_with_disjoint_pools():
    spec = DigitsSpec(tasks=("left", "right", "sum", "parity"), train=500, val=200, test=200)
    a, b = make_digits(spec), make_digits(spec)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.x[split], b.x[split])
        np.testing.assert_array_equal(a.y[split], b.y[split])
        assert set(np.unique(a.pairs[split])) <= set(a.pools[split])  # drawn from its own pool only
        assert np.all(a.pairs[split][:, 0] != a.pairs[split][:, 1])
    pools = [set(a.pools[s]) for s in ("train", "val", "test")]
    assert not (pools[0] & pools[1]) and not (pools[0] & pools[2]) and not (pools[1] & pools[2])
    assert sum(map(len, pools)) == 1797
    y = a.y["train"]
    np.testing.assert_array_equal(y[:, 2], y[:, 0] + y[:, 1])
    np.testing.assert_array_equal(y[:, 3], (y[:, 0] + y[:, 1]) % 2)
    assert a.x["train"].shape == (500, 100) and 0 <= a.x["train"].min() and a.x["train"].max() <= 1
    other = make_digits(DigitsSpec(tasks=("left", "right"), train=500, val=200, test=200, data_seed=1))
    assert not np.array_equal(other.x["train"], a.x["train"])
    assert overlap_fraction(2) == pytest.approx(0.5625)


def test_composition_sums_and_caps():
    from harness.prediction.data import load_source

    images, labels = load_source()
    data = make_digits(DigitsSpec(train=10, val=5, test=5))
    (ia, ib), x = data.pairs["train"][0], data.x["train"][0].reshape(10, 10) * 16
    want = np.zeros((10, 10))
    want[:8, :8] += images[ia]
    want[2:, 2:] += images[ib]
    np.testing.assert_allclose(x, np.minimum(want, 16))
    assert tuple(data.y["train"][0]) == (labels[ia], labels[ib])


@pytest.mark.parametrize("bad, match", [({"tasks": "left,up"}, "tasks"), ({"shift": 8}, "shift"),
                                        ({"k": 9}, "k:"), ({"gating": "dense"}, "gating"), ({"lr": 0}, "lr"),
                                        ({"batch": 5000}, "batch"), ({"adam_beta1": 1.0}, "adam_beta1")])
def test_bad_problem_is_one_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        PredictionProblem(**bad)


def test_init_is_seeded_numpy():
    pr = PredictionProblem(**TINY)
    a, b, c = init_params(pr, "dselect_k", 0), init_params(pr, "dselect_k", 0), init_params(pr, "dselect_k", 1)
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["expert/w1"], c["expert/w1"])
    assert a["gate/z_logits"].shape == (2, 2, 2)  # a leading task axis: one static gate per task


@pytest.mark.parity
@pytest.mark.parametrize("gating", ["static", "per_example"])
def test_first_step_parity_torch_tf(gating):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from harness.prediction.task import train

    pr = PredictionProblem(**{**TINY, "steps": 1, "tasks": "left,right,sum"}, gating=gating)
    for gate in GATE_NAMES:
        a = train(pr, gate, "torch", 0, "val")
        b = train(pr, gate, "tf", 0, "val")
        assert a.first_loss == pytest.approx(b.first_loss, abs=1e-5), gate
        assert set(a.first_grads) == set(b.first_grads)
        for key in a.first_grads:
            np.testing.assert_allclose(a.first_grads[key], b.first_grads[key], atol=1e-5, err_msg=f"{gate} {key}")


def test_small_study_end_to_end_and_resume(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("optuna")
    from harness.prediction.report import table, trace_table
    from harness.prediction.study import PredictionStudy, run_study

    study = PredictionStudy(problem=PredictionProblem(**TINY), gates=("softmax", "dselect_k"), trials=2,
                            tune_seeds=(0,), heldout_seeds=(1000, 1001, 1002), name="tiny")
    result = run_study(study, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "tiny.jsonl").read_text().splitlines()]
    assert len(rows) == study.total_runs == 3 * (2 + 3)
    assert {r["split"] for r in rows if r["trial"] >= 0} == {"val", "test"}
    assert all(r["kind"] == "prediction" and r["status"] == "ok" for r in rows)
    assert {r["seed"] for r in rows if r["split"] == "val"} == {0}
    assert {r["seed"] for r in rows if r["split"] == "test"} == {1000, 1001, 1002}
    for gate in ("softmax", "topk", "dselect_k"):  # the baseline is added
        info = result["gates"][gate]
        assert info["summary"]["acc_mean"]["count"] == 3
        assert len(info["best"]["trial_values"]) == 2 and len(info["nnz_trace"]["mean"]) == 2
    assert result["gates"]["dselect_k"]["tests"]["acc_mean"]["pairs"] == 3
    assert "p_holm" in result["gates"]["softmax"]["tests"]["acc_left"]
    assert "| dselect_k |" in table(result) and "| 2 |" in trace_table(result)
    again = run_study(study, tmp_path, resume=True)  # every case is in the file: nothing reruns
    assert len((tmp_path / "tiny.jsonl").read_text().splitlines()) == len(rows)
    assert again["gates"]["topk"]["summary"] == result["gates"]["topk"]["summary"]
    with pytest.raises(ValueError, match="out:"):
        run_study(study, tmp_path)


def test_suites_load_and_expand():
    from harness.prediction.suite import expand, load_prediction_suite

    for path in ("suites/prediction_default.toml", "suites/prediction_smoke.toml"):
        name, studies = load_prediction_suite(path)
        assert studies and all(s.problem.tasks for s in studies), path
    raw = {"name": "flat", "kind": "prediction", "gates": ["softmax"], "frameworks": ["torch", "tf"], "trials": 0,
           "heldout_seeds": 2, "problem": {"name": "d", "steps": 5}}
    runs = expand(raw)
    assert len(runs) == 2 * 2 * 2 and {r["gate"] for r in runs} == {"softmax", "topk"}
    with pytest.raises(ValueError, match="kind"):
        expand({**raw, "kind": "tuning"})
    with pytest.raises(ValueError, match="unknown"):
        expand({**raw, "grid": 1})
    with pytest.raises(ValueError, match="heldout_seeds"):
        load_prediction_suite({**raw, "tune_seeds": [1000]})


def test_import_loads_no_framework():
    code = ("import sys, harness.prediction, harness.prediction.study, harness.prediction.suite, "
            "harness.prediction.task, harness.prediction.report; "
            "print([m for m in ('torch', 'tensorflow', 'sklearn', 'optuna') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
