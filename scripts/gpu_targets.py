#!/usr/bin/env python
"""The GPU performance targets of issue 4, evaluated from a ``kernels`` suite results file.

Targets (PyTorch, float32, per-example gate including its projection, DSelect-k against Top-k in the same run):

1. b=16384 p=4096 n=64 k=4, forward + backward: DSelect-k median / Top-k median <= 1.0.
2. b=16384 p=2048 n=256 k=8, forward + backward: time ratio <= 1.0, and peak extra memory ratio <= 1.2.
3. b=4096 p=256 n=16 k=4, forward + backward: time ratio <= 1.5.
4. b=16384 p=4096 n=64 k=4, forward: DSelect-k median <= 2x the memory floor, ``floor_ms = (b*p*4 + b*n*4) /
   bandwidth`` (x read once, the (b, n) weights written once) with the device's measured copy bandwidth.

Each target is evaluated for every DSelect-k impl in the rows (``eager`` always; ``triton``, ``compiled``,
``bitwise``, ``reference`` when present). The Top-k baseline is Top-k ``compiled`` for ``compiled`` and Top-k
``eager`` for all others. Time ratios carry a 95% percentile-bootstrap interval of the ratio of medians from the raw
samples (2000 resamples, seed 0). A target whose rows are missing (or not ``ok``) has ``met: null`` and a reason.

Bandwidth: on CUDA, ``2 * nbytes / time`` of ``dst.copy_(src)`` for a 1 GiB float32 buffer (read + write), timed by
``triton.testing.do_bench`` (median) when Triton imports, else the median of CUDA-event timings; ``--bandwidth-gbs``
(1e9 bytes/s) overrides it and is required without CUDA.

Writes one JSON file (``--out``) and prints a summary. Exit status 0 when the file is written, whether or not the
targets are met; 2 for bad arguments (argparse).

    PYTHONPATH=. python scripts/gpu_targets.py KERNELS_JSONL --out OUT.json [--bandwidth-gbs X]

Needs only the standard library, NumPy and the source tree (PyTorch, and Triton if present, for the bandwidth).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from harness.results import read_rows  # noqa: E402
from reports.stats import bootstrap_ratio_ci  # noqa: E402  (NumPy only at import; SciPy only for p-values)

FLOAT32_BYTES = 4
N_BOOT = 2000
SEED = 0
LEVEL = 0.95
COPY_BYTES = 1 << 30  # 1 GiB float32 buffer for the bandwidth measurement
EVENT_WARMUP, EVENT_REPS = 5, 30

PAPER = {"batch": 4096, "input_dim": 256, "experts": 16, "k": 4}
ROUTER_N64 = {"batch": 16384, "input_dim": 4096, "experts": 64, "k": 4}
ROUTER_N256 = {"batch": 16384, "input_dim": 2048, "experts": 256, "k": 8}
SHAPES = (PAPER, ROUTER_N64, ROUTER_N256)
SHAPE_KEYS = ("batch", "input_dim", "experts", "k")

# (name, shape, mode, metric, threshold)
TARGETS: tuple[tuple[str, dict[str, int], str, str, float], ...] = (
    ("router_n64_fwdbwd_time", ROUTER_N64, "fwdbwd", "time_ratio", 1.0),
    ("router_n256_fwdbwd_time", ROUTER_N256, "fwdbwd", "time_ratio", 1.0),
    ("router_n256_fwdbwd_mem", ROUTER_N256, "fwdbwd", "mem_ratio", 1.2),
    ("paper_fwdbwd_time", PAPER, "fwdbwd", "time_ratio", 1.5),
    ("router_n64_fwd_floor", ROUTER_N64, "fwd", "floor_ratio", 2.0),
)
IMPL_ORDER = ("eager", "triton", "compiled", "bitwise", "reference")
MODES = ("fwdbwd", "fwd")
SELECT = {"kind": "timing", "framework": "torch", "device": "gpu", "gating": "per_example", "dtype": "float32"}


# --------------------------------------------------------------------------------------------------------------
# Rows.
# --------------------------------------------------------------------------------------------------------------
def shape_text(shape: Mapping[str, Any]) -> str:
    return f"b={shape['batch']} p={shape['input_dim']} n={shape['experts']} k={shape['k']}"


def baseline_impl(impl: str) -> str:
    """Top-k's impl that a DSelect-k impl is compared with: ``compiled`` with ``compiled``, else ``eager``."""
    return "compiled" if impl == "compiled" else "eager"


class Rows:
    """The torch/gpu/per-example/float32 rows of a results file, looked up by (gate, impl, mode, shape)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]):
        self.ok: dict[tuple, dict[str, Any]] = {}
        self.other: dict[tuple, dict[str, Any]] = {}  # the last failed/skipped row of a key, for reasons
        self.duplicates = 0
        for row in rows:
            if any(row.get(key) != value for key, value in SELECT.items()):
                continue
            try:
                key = self.key(row["gate"], row["impl"], row["mode"], row)
            except KeyError:
                continue
            if row.get("status") == "ok":
                self.duplicates += key in self.ok
                self.ok[key] = dict(row)  # the last ok row of a key wins
            else:
                self.other[key] = dict(row)

    @staticmethod
    def key(gate: str, impl: str, mode: str, shape: Mapping[str, Any]) -> tuple:
        return (gate, impl, mode, *(int(shape[k]) for k in SHAPE_KEYS))

    def get(self, gate: str, impl: str, mode: str, shape: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.ok.get(self.key(gate, impl, mode, shape))

    def missing_reason(self, gate: str, impl: str, mode: str, shape: Mapping[str, Any]) -> str:
        text = f"no ok row for {gate} {impl} {mode} at {shape_text(shape)}"
        other = self.other.get(self.key(gate, impl, mode, shape))
        if other is not None:
            text += f" (row {other.get('status')}: {str(other.get('error') or '')[:300]})"
        return text

    def impls(self, gate: str) -> list[str]:
        present = {key[1] for key in self.ok if key[0] == gate}
        return sorted(present, key=lambda i: (IMPL_ORDER.index(i) if i in IMPL_ORDER else len(IMPL_ORDER), i))

    def gates(self) -> list[str]:
        return sorted({key[0] for key in self.ok})


def row_ref(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a target records of a row it used."""
    prov = row.get("provenance") or {}
    return {"case_id": row.get("case_id"), "gate": row.get("gate"), "impl": row.get("impl"),
            "mode": row.get("mode"), "median_ms": row.get("median_ms"), "iqr_ms": row.get("iqr_ms"),
            "n_samples": row.get("n_samples") or len(row.get("samples_ms") or []),
            "peak_mem_bytes": row.get("peak_mem_bytes"), "commit": prov.get("commit"), "gpu": prov.get("gpu"),
            "time": prov.get("time")}


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _samples(row: Mapping[str, Any]) -> np.ndarray:
    values = [_finite(v) for v in row.get("samples_ms") or []]
    return np.asarray([v for v in values if v is not None], dtype=float)


def _ci(a: np.ndarray, b: np.ndarray) -> list[float] | None:
    low, high = bootstrap_ratio_ci(a, b, level=LEVEL, n_boot=N_BOOT, seed=SEED)
    return [low, high] if math.isfinite(low) and math.isfinite(high) else None


def _ci_verdict(ci: list[float] | None, threshold: float) -> str | None:
    if ci is None:
        return None
    if ci[1] <= threshold:
        return "met"
    if ci[0] > threshold:
        return "not met"
    return "within noise"


def _same_run_warning(rows: Sequence[Mapping[str, Any]]) -> str | None:
    seen = {((r.get("provenance") or {}).get("commit"), (r.get("provenance") or {}).get("gpu")) for r in rows}
    if len(seen) > 1:
        return f"rows from different commits/GPUs: {sorted(map(str, seen))}"
    return None


# --------------------------------------------------------------------------------------------------------------
# Targets.
# --------------------------------------------------------------------------------------------------------------
def floor_of(shape: Mapping[str, int], bandwidth_gbs: float) -> dict[str, Any]:
    """Bytes of x read once plus the (b, n) float32 weights written once, over the copy bandwidth."""
    bytes_read = shape["batch"] * shape["input_dim"] * FLOAT32_BYTES
    bytes_written = shape["batch"] * shape["experts"] * FLOAT32_BYTES
    total = bytes_read + bytes_written
    return {"bytes_read": bytes_read, "bytes_written": bytes_written, "bytes": total,
            "bandwidth_gbs": bandwidth_gbs, "floor_ms": total / (bandwidth_gbs * 1e9) * 1e3}


def evaluate(rows: Rows, name: str, impl: str, shape: dict[str, int], mode: str, metric: str, threshold: float,
             bandwidth_gbs: float | None, bandwidth_problem: str | None) -> tuple[dict[str, Any], list[dict]]:
    """One target for one DSelect-k impl, and the rows it used."""
    out: dict[str, Any] = {"name": name, "impl": impl, "shape": dict(shape), "mode": mode, "metric": metric,
                           "value": None, "ci95": None, "threshold": threshold, "met": None}
    dsel = rows.get("dselect_k", impl, mode, shape)
    used: list[dict[str, Any]] = []
    reasons: list[str] = []
    if dsel is None:
        reasons.append(rows.missing_reason("dselect_k", impl, mode, shape))
    else:
        used.append(dsel)
    if metric == "floor_ratio":
        if bandwidth_gbs is None:
            reasons.append(f"no copy bandwidth ({bandwidth_problem})")
        else:
            out["floor"] = floor_of(shape, bandwidth_gbs)
    else:
        out["baseline_impl"] = baseline_impl(impl)
        topk = rows.get("topk", out["baseline_impl"], mode, shape)
        if topk is None:
            reasons.append(rows.missing_reason("topk", out["baseline_impl"], mode, shape))
        else:
            used.append(topk)
    out["rows"] = [row_ref(r) for r in used]
    if reasons:
        out["reason"] = "; ".join(reasons)
        return out, used
    if metric in ("time_ratio", "mem_ratio"):
        column = "median_ms" if metric == "time_ratio" else "peak_mem_bytes"
        a, b = _finite(dsel.get(column)), _finite(topk.get(column))
        if a is None or b is None or b <= 0:
            out["reason"] = f"no usable {column} (dselect_k {a}, topk {b})"
            return out, used
        out["value"] = a / b
        if metric == "time_ratio":
            out["ci95"] = _ci(_samples(dsel), _samples(topk))
    else:  # floor_ratio
        a = _finite(dsel.get("median_ms"))
        floor_ms = out["floor"]["floor_ms"]
        if a is None or not floor_ms > 0:
            out["reason"] = f"no usable median_ms ({a}) or floor ({floor_ms})"
            return out, used
        out["value"] = a / floor_ms
        # The floor is a constant: two copies of it make the bootstrap's denominator median exactly the floor.
        out["ci95"] = _ci(_samples(dsel), np.full(2, floor_ms))
    out["met"] = bool(out["value"] <= threshold)
    out["ci_verdict"] = _ci_verdict(out["ci95"], threshold)
    warning = _same_run_warning(used)
    if warning:
        out["warning"] = warning
    return out, used


def targets(rows: Rows, bandwidth_gbs: float | None,
            bandwidth_problem: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every target for every DSelect-k impl (``eager`` always), and all the rows they used, in order."""
    impls = ["eager"] + [i for i in rows.impls("dselect_k") if i != "eager"]
    evaluated, used = [], []
    for name, shape, mode, metric, threshold in TARGETS:
        for impl in impls:
            out, rows_used = evaluate(rows, name, impl, shape, mode, metric, threshold, bandwidth_gbs,
                                      bandwidth_problem)
            evaluated.append(out)
            used.extend(rows_used)
    return evaluated, used


def table(rows: Rows) -> list[dict[str, Any]]:
    """Every gate and impl at the three shapes: fwdbwd and fwd medians, peak memory, and the ratio to Top-k."""
    out = []
    for gate in rows.gates():
        for impl in rows.impls(gate):
            for shape in SHAPES:
                entry: dict[str, Any] = {"gate": gate, "impl": impl, "shape": shape_text(shape)}
                found = False
                for mode in MODES:
                    row = rows.get(gate, impl, mode, shape)
                    base = rows.get("topk", baseline_impl(impl), mode, shape)
                    median = _finite(row.get("median_ms")) if row else None
                    base_median = _finite(base.get("median_ms")) if base else None
                    found = found or row is not None
                    entry[f"{mode}_median_ms"] = median
                    entry[f"{mode}_peak_mem_bytes"] = row.get("peak_mem_bytes") if row else None
                    entry[f"{mode}_ratio_to_topk"] = (median / base_median if median is not None and base_median
                                                      else None)
                if found:
                    out.append(entry)
    return out


# --------------------------------------------------------------------------------------------------------------
# Bandwidth.
# --------------------------------------------------------------------------------------------------------------
def measure_bandwidth() -> tuple[float, str]:
    """Device copy bandwidth in GB/s (1e9 bytes/s): ``2 * nbytes / time`` of a 1 GiB float32 ``copy_``."""
    import torch

    n = COPY_BYTES // FLOAT32_BYTES
    src = torch.ones(n, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    nbytes = src.numel() * src.element_size()

    def copy() -> None:
        dst.copy_(src)

    ms, why_not_triton = None, None
    try:
        import triton.testing

        try:
            ms = float(triton.testing.do_bench(copy, warmup=25, rep=100, return_mode="median"))
        except TypeError:  # an older Triton without return_mode
            ms = float(triton.testing.do_bench(copy, warmup=25, rep=100, quantiles=[0.5]))
        method = "triton.testing.do_bench median (warmup 25 ms, rep 100 ms) of dst.copy_(src), 1 GiB float32"
    except Exception as exc:  # noqa: BLE001 - not importable, or failing: CUDA events instead
        why_not_triton = f"{type(exc).__name__}: {exc}"[:200]
    if ms is None:
        for _ in range(EVENT_WARMUP):
            copy()
        torch.cuda.synchronize()
        times = []
        for _ in range(EVENT_REPS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            copy()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        ms = statistics.median(times)
        method = (f"CUDA events median of {EVENT_REPS} reps after {EVENT_WARMUP} warm-up of dst.copy_(src), "
                  f"1 GiB float32 (triton.testing.do_bench not used: {why_not_triton})")
    return 2 * nbytes / (ms * 1e-3) / 1e9, f"{method}: {ms:.4f} ms for {2 * nbytes} bytes read + written"


def _cuda_available() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as exc:
        return False, f"PyTorch is not importable ({exc})"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False"
    return True, ""


# --------------------------------------------------------------------------------------------------------------
# Output.
# --------------------------------------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """NaN/inf to null, NumPy scalars to Python (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _times(ratio: float | None) -> str:
    return "" if ratio is None else f"({ratio:.2f}x)"


def print_summary(result: Mapping[str, Any]) -> None:
    bw = result["bandwidth_gbs"]
    print(f"source: {result['source']} ({result['selected_ok_rows']} torch/gpu/per_example/float32 ok rows, "
          f"{result['unreadable_lines']} unreadable lines)")
    prov = result.get("provenance") or {}
    print(f"gpu: {prov.get('gpu')}  torch {prov.get('torch')}  cuda {prov.get('cuda')}  commit {prov.get('commit')}")
    print(f"copy bandwidth: {_fmt(bw, '.1f')} GB/s ({result['bandwidth_method']})")
    print("targets (DSelect-k against Top-k):")
    for t in result["targets"]:
        met = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        ci = f" [{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}]" if t.get("ci95") else ""
        line = (f"  {met:8s} {t['name']:24s} {t['impl']:10s} {t['metric']:11s} {_fmt(t['value'])}{ci} "
                f"<= {t['threshold']}")
        if t["met"] is None:
            line += f"  ({t.get('reason')})"
        elif t.get("floor"):
            line += f"  (floor {t['floor']['floor_ms']:.4f} ms)"
        print(line)
    print("medians (ms) at the three shapes, x = ratio to Top-k (compiled to compiled, others to eager):")
    for e in result["table"]:
        print(f"  {e['gate']:14s} {e['impl']:10s} {e['shape']:26s} "
              f"fwdbwd {_fmt(e['fwdbwd_median_ms'], '.4f'):>9s} {_times(e['fwdbwd_ratio_to_topk']):>9s}  "
              f"fwd {_fmt(e['fwd_median_ms'], '.4f'):>9s} {_times(e['fwd_ratio_to_topk']):>9s}".rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kernels_jsonl", metavar="KERNELS_JSONL", type=Path, help="results of the kernels suite")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--bandwidth-gbs", type=float, default=None,
                        help="device copy bandwidth in GB/s (1e9 bytes/s); required without CUDA, else measured")
    args = parser.parse_args(argv)

    path: Path = args.kernels_jsonl
    if not path.is_file():
        parser.error(f"KERNELS_JSONL: {path}: no such file")
    if args.bandwidth_gbs is not None and not (math.isfinite(args.bandwidth_gbs) and args.bandwidth_gbs > 0):
        parser.error(f"--bandwidth-gbs: expected a positive number of GB/s; got {args.bandwidth_gbs}")

    bandwidth, method, problem = args.bandwidth_gbs, "given (--bandwidth-gbs)", None
    if bandwidth is None:
        available, why = _cuda_available()
        if not available:
            parser.error(f"--bandwidth-gbs is required without a CUDA device to measure it on ({why})")
        try:
            bandwidth, method = measure_bandwidth()
        except Exception as exc:  # noqa: BLE001 - the other targets are still worth writing
            bandwidth, problem = None, f"{type(exc).__name__}: {exc}"
            method = f"measurement failed: {problem}"

    read = read_rows(path)
    cannot_read = [p for p in read.problems if ": cannot read:" in p]
    if cannot_read:
        parser.error(f"KERNELS_JSONL: {cannot_read[0]}")
    rows = Rows(read.rows)
    evaluated, used = targets(rows, bandwidth, problem)
    first_row = used[0] if used else next(iter(rows.ok.values()), None)
    summary: dict[str, dict[str, int]] = {}
    for t in evaluated:
        counts = summary.setdefault(t["impl"], {"met": 0, "not_met": 0, "unknown": 0})
        counts[{True: "met", False: "not_met", None: "unknown"}[t["met"]]] += 1
    result = {
        "bandwidth_gbs": bandwidth,
        "bandwidth_method": method,
        "source": str(path),
        "provenance": (first_row or {}).get("provenance"),
        "selected_ok_rows": len(rows.ok),
        "duplicate_rows": rows.duplicates,
        "unreadable_lines": len(read.problems),
        "problems": read.problems[:20],
        "bootstrap": {"level": LEVEL, "resamples": N_BOOT, "seed": SEED, "statistic": "ratio of medians"},
        "targets": evaluated,
        "summary": summary,
        "table": table(rows),
    }
    result = _clean(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print_summary(result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
