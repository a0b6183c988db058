"""reports.targets (the targets of suites/targets/kernels.toml) on a synthetic kernels results file with known
medians, samples and peak memory, and a synthetic timing-fidelity file.

Samples are multiples of one base draw ``A`` (odd length, median exactly 1.0), so every ratio of medians is exact:

================ ========================= =========================================================
shape / mode     rows                      expected
================ ========================= =========================================================
n=64 fwdbwd      topk eager 2A, compiled   eager 1.6A: 0.8 met; reference 100A: 50 not met;
                 0.5A                      compiled 1.0A: 2.0 not met
n=256 fwdbwd     topk eager 4A, 1000 B     eager 5A (1100 B): time 1.25 not met, memory 1.1 met;
                                           reference skipped (null, its error); compiled 3A: no topk
                                           compiled row (null)
paper fwdbwd     topk eager 0.2A           eager 0.28A: 1.4 met; reference 0.3A: 1.5 met (at the bound);
                                           bitwise 0.4A: 2.0 not met (bitwise has no other shape: null)
n=64 fwd         (floor at 4200 GB/s)      eager 0.1A: 0.1 / 0.0649118... = 1.5406 met; reference 4A
================ ========================= =========================================================

plus rows the targets must ignore (TensorFlow, CPU, static gating, float64, a failed Top-k) and one corrupt line.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from harness.results import ResultsWriter, make_row
from harness.timer import summarize
from reports.stats import bootstrap_ratio_ci
from reports.targets import DEFAULT_TARGETS, evaluate_targets, load_targets, run_targets

ROOT = Path(__file__).resolve().parent.parent
A = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 0.85])  # median exactly 1.0
PAPER = {"batch": 4096, "input_dim": 256, "experts": 16, "k": 4}
N64 = {"batch": 16384, "input_dim": 4096, "experts": 64, "k": 4}
N256 = {"batch": 16384, "input_dim": 2048, "experts": 256, "k": 8}
GPU = {"framework": "torch", "torch": "2.11.0", "cuda": "12.8", "gpu": "Synthetic H200", "gpu_driver": "0"}
BANDWIDTH = 4200.0
SAMPLES: dict[tuple, np.ndarray] = {}


def _row(gate, impl, mode, shape, scale=None, peak=None, status="ok", error=None, **over):
    params = {"gate": gate, "framework": "torch", "device": "gpu", "impl": impl, "mode": mode,
              "gating": "per_example", **shape, "dtype": "float32"}
    params.update({k: v for k, v in over.items() if k in params})
    values = {}
    if status == "ok":
        samples = scale * A
        values = summarize(samples)
        values["peak_mem_bytes"] = peak
        if params["framework"] == "torch" and params["device"] == "gpu" and params["gating"] == "per_example" \
                and params["dtype"] == "float32":
            SAMPLES[(gate, impl, mode, shape["experts"], shape["batch"])] = samples
    return make_row("timing", "kernels", params, status, error=error, extra_provenance=GPU, **values)


def _rows() -> list[dict]:
    return [
        # n=64 fwdbwd
        _row("topk", "eager", "fwdbwd", N64, 2.0, 500),
        _row("topk", "compiled", "fwdbwd", N64, 0.5, 400),
        _row("dselect_k", "eager", "fwdbwd", N64, 1.6, 450),
        _row("dselect_k", "reference", "fwdbwd", N64, 100.0, 10**9),
        _row("dselect_k", "compiled", "fwdbwd", N64, 1.0, 300),
        # n=256 fwdbwd
        _row("topk", "eager", "fwdbwd", N256, 4.0, 1000),
        _row("dselect_k", "eager", "fwdbwd", N256, 5.0, 1100),
        _row("dselect_k", "reference", "fwdbwd", N256, status="skipped",
             error="reference impl would need about 32.0 GiB"),
        _row("dselect_k", "compiled", "fwdbwd", N256, 3.0, 900),
        # paper fwdbwd
        _row("topk", "eager", "fwdbwd", PAPER, 0.2, 100),
        _row("dselect_k", "eager", "fwdbwd", PAPER, 0.28, 90),
        _row("dselect_k", "reference", "fwdbwd", PAPER, 0.3, 5000),
        _row("dselect_k", "bitwise", "fwdbwd", PAPER, 0.4, 300),
        _row("softmax", "eager", "fwdbwd", PAPER, 0.1, 80),
        # n=64 fwd
        _row("topk", "eager", "fwd", N64, 0.08, 0),
        _row("dselect_k", "eager", "fwd", N64, 0.1, 0),
        _row("dselect_k", "reference", "fwd", N64, 4.0, 0),
        # Rows to ignore: other framework, device, gating, dtype, and a failed Top-k at the paper shape.
        _row("dselect_k", "eager", "fwdbwd", N64, 0.01, 1, framework="tf"),
        _row("dselect_k", "eager", "fwdbwd", N64, 0.01, 1, device="cpu"),
        _row("dselect_k", "eager", "fwdbwd", N64, 0.01, 1, gating="static"),
        _row("topk", "eager", "fwdbwd", N64, 50.0, 1, dtype="float64"),
        _row("topk", "compiled", "fwdbwd", PAPER, status="failed", error="RuntimeError: boom"),
    ]


FIDELITY = {"device": "gpu", "workloads": {
    "matmul_4096": {"harness_median_ms": 2.0, "do_bench_median_ms": 2.02, "harness_rounds_ms": [2.0, 1.99, 2.01],
                    "do_bench_rounds_ms": [2.02, 2.03, 2.01]},
    "dselect_k_fwd_b16384_n256": {"harness_median_ms": 1.0, "do_bench_median_ms": 0.8,
                                  "harness_rounds_ms": [1.0, 1.01, 0.99], "do_bench_rounds_ms": [0.8, 0.81, 0.79]},
}}


def _run(*args, **kwargs) -> tuple[int, str, str]:
    """``run_targets`` with its stdout and stderr captured: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_targets(*args, **kwargs)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("gpu_targets")
    path = folder / "kernels.jsonl"
    writer = ResultsWriter(path)
    for row in _rows():
        writer.write(row)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"kind": "timing", "gate": "topk", "trunc\n')
    out = folder / "targets.json"
    code, stdout, stderr = _run([path], DEFAULT_TARGETS, out, bandwidth_gbs=BANDWIDTH)
    assert code == 0, stderr
    data = json.loads(out.read_text())
    data["_stdout"] = stdout
    return data


def _target(result: dict, name: str, impl: str) -> dict:
    [t] = [t for t in result["targets"] if t["name"] == name and t["impl"] == impl]
    return t


def test_header(result):
    assert result["bandwidth_gbs"] == BANDWIDTH
    assert "--bandwidth-gbs" in result["bandwidth_method"]
    assert result["source"].endswith("kernels.jsonl")
    assert result["unreadable_lines"] == 1
    assert result["provenance"]["gpu"] == "Synthetic H200"
    assert result["provenance"]["torch"] == "2.11.0"
    # The ok torch/gpu/per_example/float32 rows only.
    assert result["selected_ok_rows"] == 16
    impls = [t["impl"] for t in result["targets"] if t["name"] == "router_n64_fwdbwd_time"]
    assert impls == ["eager", "compiled", "bitwise", "reference"]
    kernel_targets = [t for t in result["targets"] if t["metric"] != "timer_vs_do_bench"]
    assert len(kernel_targets) == 5 * 4
    assert {t["status"] for t in kernel_targets} == {"met", "missed", "not measured"}
    assert "router_n64_fwdbwd_time" in result["_stdout"] and "NOT MET" in result["_stdout"]


@pytest.mark.parametrize("name, impl, value, met, shape", [
    ("router_n64_fwdbwd_time", "eager", 0.8, True, N64),
    ("router_n64_fwdbwd_time", "reference", 50.0, False, N64),
    ("router_n64_fwdbwd_time", "compiled", 2.0, False, N64),
    ("router_n256_fwdbwd_time", "eager", 1.25, False, N256),
    ("paper_fwdbwd_time", "eager", 1.4, True, PAPER),
    ("paper_fwdbwd_time", "reference", 1.5, True, PAPER),
    ("paper_fwdbwd_time", "bitwise", 2.0, False, PAPER),
])
def test_time_ratios(result, name, impl, value, met, shape):
    t = _target(result, name, impl)
    assert t["metric"] == "time_ratio" and t["mode"] == "fwdbwd" and t["shape"] == shape
    assert t["value"] == pytest.approx(value, rel=1e-12)
    assert t["met"] is met
    base = "compiled" if impl == "compiled" else "eager"
    assert t["baseline_impl"] == base
    assert [(r["gate"], r["impl"]) for r in t["rows"]] == [("dselect_k", impl), ("topk", base)]
    expected = bootstrap_ratio_ci(SAMPLES[("dselect_k", impl, "fwdbwd", shape["experts"], shape["batch"])],
                                  SAMPLES[("topk", base, "fwdbwd", shape["experts"], shape["batch"])],
                                  level=0.95, n_boot=2000, seed=0)
    assert t["ci95"] == pytest.approx(list(expected), rel=1e-12)
    assert t["ci95"][0] <= t["ci95"][1]


def test_memory_ratio(result):
    t = _target(result, "router_n256_fwdbwd_mem", "eager")
    assert t["metric"] == "mem_ratio" and t["threshold"] == 1.2
    assert t["value"] == pytest.approx(1.1, rel=1e-12) and t["met"] is True and t["ci95"] is None
    assert [r["peak_mem_bytes"] for r in t["rows"]] == [1100, 1000]


def test_floor(result):
    t = _target(result, "router_n64_fwd_floor", "eager")
    floor = t["floor"]
    assert floor["bytes_read"] == 16384 * 4096 * 4 == 268435456
    assert floor["bytes_written"] == 16384 * 64 * 4 == 4194304
    assert floor["bytes"] == 272629760
    assert floor["floor_ms"] == pytest.approx(272629760 / 4200e9 * 1e3, rel=1e-12)  # 0.064912 ms
    assert t["value"] == pytest.approx(0.1 / (272629760 / 4200e9 * 1e3), rel=1e-12)  # 1.5406
    assert t["met"] is True and t["threshold"] == 2.0
    ref = _target(result, "router_n64_fwd_floor", "reference")
    assert ref["value"] == pytest.approx(4.0 / floor["floor_ms"], rel=1e-12) and ref["met"] is False


def test_missing_rows_give_null_with_reason(result):
    skipped = _target(result, "router_n256_fwdbwd_time", "reference")
    assert skipped["met"] is None and skipped["value"] is None
    assert "no ok row for dselect_k reference fwdbwd at b=16384 p=2048 n=256 k=8" in skipped["reason"]
    assert "skipped" in skipped["reason"] and "32.0 GiB" in skipped["reason"]
    no_base = _target(result, "router_n256_fwdbwd_time", "compiled")
    assert no_base["met"] is None
    assert no_base["reason"] == "no ok row for topk compiled fwdbwd at b=16384 p=2048 n=256 k=8"
    assert [r["impl"] for r in no_base["rows"]] == ["compiled"]
    bitwise = _target(result, "router_n64_fwdbwd_time", "bitwise")
    assert bitwise["met"] is None and "no ok row for dselect_k bitwise fwdbwd at b=16384 p=4096" in bitwise["reason"]
    assert _target(result, "router_n64_fwd_floor", "compiled")["met"] is None
    assert result["summary"]["eager"] == {"met": 4, "not_met": 1, "unknown": 0}
    assert result["summary"]["bitwise"] == {"met": 0, "not_met": 1, "unknown": 4}


def test_table(result):
    table = {(e["gate"], e["impl"], e["shape"]): e for e in result["table"]}
    e = table[("dselect_k", "eager", "b=16384 p=4096 n=64 k=4")]
    assert e["fwdbwd_median_ms"] == pytest.approx(1.6) and e["fwd_median_ms"] == pytest.approx(0.1)
    assert e["fwdbwd_ratio_to_topk"] == pytest.approx(0.8) and e["fwd_ratio_to_topk"] == pytest.approx(1.25)
    ref = table[("dselect_k", "reference", "b=4096 p=256 n=16 k=4")]
    assert ref["fwdbwd_ratio_to_topk"] == pytest.approx(1.5) and ref["fwd_median_ms"] is None
    assert table[("softmax", "eager", "b=4096 p=256 n=16 k=4")]["fwdbwd_ratio_to_topk"] == pytest.approx(0.5)
    assert ("dselect_k", "reference", "b=16384 p=2048 n=256 k=8") not in table  # only a skipped row there


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    code, _, stderr = _run([missing], DEFAULT_TARGETS, tmp_path / "o.json", bandwidth_gbs=1000)
    assert code == 2
    assert str(missing) in stderr and not (tmp_path / "o.json").exists()


def test_bandwidth_required_without_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the targets measure the bandwidth themselves")
    path = tmp_path / "kernels.jsonl"
    ResultsWriter(path).write(_row("topk", "eager", "fwd", N64, 1.0, 0))
    code, _, stderr = _run([path], DEFAULT_TARGETS, tmp_path / "o.json")
    assert code == 2
    assert "--bandwidth-gbs is required" in stderr


def test_timer_vs_do_bench(result, tmp_path):
    """The fidelity targets: not measured without a fidelity file; with one, |harness / do_bench - 1| <= 0.05."""
    assert all(t["status"] == "not measured" for t in result["targets"] if t["metric"] == "timer_vs_do_bench")
    fidelity = tmp_path / "timing_fidelity_gpu.json"
    fidelity.write_text(json.dumps(FIDELITY))
    got = {t["name"]: t for t in evaluate_targets([], load_targets(), fidelity=FIDELITY)
           if t["metric"] == "timer_vs_do_bench"}
    assert got["timer_matmul_4096"]["value"] == pytest.approx(2.0 / 2.02) and got["timer_matmul_4096"]["met"]
    assert got["timer_dselect_k_fwd_n256"]["value"] == pytest.approx(1.25)
    assert got["timer_dselect_k_fwd_n256"]["status"] == "missed"
    assert got["timer_dselect_k_fwdbwd_n64"]["status"] == "not measured"
    code, _, stderr = _run([fidelity], DEFAULT_TARGETS, tmp_path / "o.json", bandwidth_gbs=1000)
    assert code == 0, stderr
    written = {t["name"]: t for t in json.loads((tmp_path / "o.json").read_text())["targets"]}
    assert written["timer_matmul_4096"]["met"] is True


@pytest.mark.parametrize("change, match", [
    ({"metric": "speed"}, "metric"),
    ({"threshold": "1"}, "threshold"),
    ({"case": {}}, "case"),
    ({"baseline": {}}, "baseline"),
    ({"bound": 1.0}, "got also"),
])
def test_bad_targets_file(tmp_path, change, match):
    entry = {"name": "t", "metric": "time_ratio", "threshold": 1.0, "case": {"gate": "dselect_k"},
             "baseline": {"gate": "topk"}, **change}
    lines = ["[[targets]]"] + [f"{k} = {json.dumps(v) if not isinstance(v, dict) else _inline(v)}"
                               for k, v in entry.items()]
    path = tmp_path / "t.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=match):
        load_targets(path)


def _inline(table: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + " }"
