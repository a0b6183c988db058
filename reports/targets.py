"""Performance targets as data: a TOML list of targets (``suites/targets/kernels.toml``) evaluated on results rows.

A target names the case to measure (the columns of its rows; without ``impl``, every implementation of the gate
in the rows, ``eager`` first), the baseline (the columns its row has instead of the case's, paired by
``reports.comparison.Pairing``: the baseline's same implementation when it has it, else ``eager``), the metric
and the bound (``threshold``). Metrics (one registered function each, ``METRICS``):

- ``time_ratio``: ``median(case) / median(baseline)``, with the bootstrap 95% interval of
  ``reports.comparison.ratio_of_medians`` over the raw samples;
- ``mem_ratio``: ``peak_mem_bytes(case) / peak_mem_bytes(baseline)``;
- ``floor_ratio``: ``median(case) / floor_ms`` with ``floor_ms = (b*p + b*n) * itemsize / bandwidth`` (x read
  once, the ``(b, n)`` weights written once) at the device's copy bandwidth; the interval treats the floor as a
  constant;
- ``timer_vs_do_bench``: ``median(harness rounds) / median(do_bench rounds)`` of a workload of a timing-fidelity
  results file (``scripts/timing_fidelity.py --device gpu``); met when ``|value - 1| <= threshold``.

The others are met when ``value <= threshold``. Each evaluated target says ``status``: ``met``, ``missed`` or
``not measured`` (its rows missing or not ``ok``; ``reason`` says which), with ``met`` true / false / null, the
value, ``ci95`` and the rows it used. Bandwidth: on CUDA, ``2 * nbytes / time`` of ``dst.copy_(src)`` for a 1 GiB
float32 buffer timed by ``triton.testing.do_bench`` (median), else CUDA events; ``bandwidth_gbs`` overrides it
and is required without CUDA. Needs only the standard library and NumPy (PyTorch and Triton for the bandwidth).

The command (registered by the CLI over ``run_targets``)::

    gatebench targets RESULTS... [--targets suites/targets/kernels.toml] --out OUT.json [--bandwidth-gbs X]
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .comparison import Pairing, constant_sample, finite, ratio_of_medians, sample_of

DEFAULT_TARGETS = Path(__file__).resolve().parent.parent / "suites" / "targets" / "kernels.toml"
LEVEL, N_BOOT, SEED = 0.95, 2000, 0
COPY_BYTES = 1 << 30  # 1 GiB float32 buffer for the bandwidth measurement
EVENT_WARMUP, EVENT_REPS = 5, 30
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
IMPL_ORDER = ("eager", "triton", "compiled", "bitwise", "reference")
SHAPE_ABBREV = {"batch": "b", "input_dim": "p", "experts": "n", "k": "k"}
_CASE_ONLY = ("gate", "mode", "impl")


# ------------------------------------------------------------------------------------------------------------
# Targets file.
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One target: what is measured (``case``), against what (``baseline``), how (``metric``), the bound."""

    name: str
    metric: str
    threshold: float
    case: dict[str, Any]
    baseline: dict[str, Any] = field(default_factory=dict)
    select: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> dict[str, Any]:
        return {k: v for k, v in self.case.items() if k not in _CASE_ONLY}


def _target(entry: Any, where: str, select: dict[str, Any]) -> Target:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a table; got {entry!r}")
    name, metric, threshold = entry.get("name"), entry.get("metric"), entry.get("threshold")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: expected a non-empty string; got {name!r}")
    if metric not in METRICS:
        raise ValueError(f"{where}.metric: expected one of {sorted(METRICS)}; got {metric!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"{where}.threshold: expected a finite number; got {threshold!r}")
    case, baseline = entry.get("case"), entry.get("baseline", {})
    if not isinstance(case, Mapping) or not case:
        raise ValueError(f"{where}.case: expected a table of columns; got {case!r}")
    if not isinstance(baseline, Mapping) or (metric in ("time_ratio", "mem_ratio") and not baseline):
        raise ValueError(f"{where}.baseline: expected a table of columns for {metric}; got {baseline!r}")
    extra = sorted(set(entry) - {"name", "metric", "threshold", "case", "baseline"})
    if extra:
        raise ValueError(f"{where}: expected name, metric, threshold, case, baseline; got also {extra}")
    return Target(name, metric, float(threshold), dict(case), dict(baseline), dict(select))


def load_targets(path: str | Path = DEFAULT_TARGETS) -> list[Target]:
    """The targets of a TOML file: a ``[select]`` table (the rows every target reads) and ``[[targets]]``."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"targets: expected a readable TOML file; got {path} ({exc})") from exc
    select, entries = doc.get("select", {}), doc.get("targets")
    if not isinstance(select, Mapping):
        raise ValueError(f"targets: expected [select] to be a table of columns; got {select!r}")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"targets: expected a non-empty [[targets]] list in {path}; got {entries!r}")
    return [_target(entry, f"targets[{i}]", dict(select)) for i, entry in enumerate(entries)]


# ------------------------------------------------------------------------------------------------------------
# Rows.
# ------------------------------------------------------------------------------------------------------------
def shape_text(shape: Mapping[str, Any]) -> str:
    return " ".join(f"{SHAPE_ABBREV.get(k, k)}={v}" for k, v in shape.items())


def _impl_rank(impl: Any) -> tuple:
    return (IMPL_ORDER.index(impl) if impl in IMPL_ORDER else len(IMPL_ORDER), str(impl))


class Rows:
    """The rows a target set reads: the ``select`` ed rows, ``ok`` ones paired, the others kept for reasons."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], select: Mapping[str, Any], shape_keys: Sequence[str]):
        chosen = [r for r in rows if all(r.get(k) == v for k, v in select.items())]
        self.keys = ("gate", "impl", "mode", *shape_keys)
        self.ok_rows = [r for r in chosen if r.get("status") == "ok"]
        self.other = {self.key(r): r for r in chosen if r.get("status") != "ok"}
        self.index = {self.key(r): r for r in self.ok_rows}  # the last ok row of a key wins
        self._pairings: dict[tuple, Pairing] = {}

    def key(self, row: Mapping[str, Any]) -> tuple:
        return tuple(row.get(k) for k in self.keys)

    def pairing(self, baseline: Mapping[str, Any]) -> Pairing:
        key = tuple(sorted(baseline.items()))
        if key not in self._pairings:
            self._pairings[key] = Pairing(self.ok_rows, self.keys, baseline)
        return self._pairings[key]

    @property
    def duplicates(self) -> int:
        return len(self.ok_rows) - len(self.index)

    def get(self, want: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return self.index.get(self.key(want))

    def missing_reason(self, want: Mapping[str, Any]) -> str:
        shape = {k: want.get(k) for k in self.keys[3:]}
        text = f"no ok row for {want.get('gate')} {want.get('impl')} {want.get('mode')} at {shape_text(shape)}"
        other = self.other.get(self.key(want))
        if other is not None:
            text += f" (row {other.get('status')}: {str(other.get('error') or '')[:300]})"
        return text

    def impls(self, gate: Any) -> list[Any]:
        return sorted({r.get("impl") for r in self.index.values() if r.get("gate") == gate}, key=_impl_rank)


def row_ref(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a target records of a row it used."""
    prov = row.get("provenance") or {}
    return {"case_id": row.get("case_id"), "gate": row.get("gate"), "impl": row.get("impl"),
            "mode": row.get("mode"), "median_ms": row.get("median_ms"), "iqr_ms": row.get("iqr_ms"),
            "n_samples": row.get("n_samples") or len(row.get("samples_ms") or []),
            "peak_mem_bytes": row.get("peak_mem_bytes"), "commit": prov.get("commit"), "gpu": prov.get("gpu"),
            "time": prov.get("time")}


# ------------------------------------------------------------------------------------------------------------
# Metrics: one registered function each, (context, out, case row, baseline row) -> value or a reason.
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Context:
    """What the metrics read besides the rows: the copy bandwidth and the timing-fidelity results."""

    bandwidth_gbs: float | None = None
    bandwidth_problem: str | None = None
    fidelity: Mapping[str, Any] | None = None


MetricFn = Callable[[Context, dict, Mapping[str, Any], Mapping[str, Any] | None], "str | None"]
METRICS: dict[str, MetricFn] = {}


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    def register(fn: MetricFn) -> MetricFn:
        METRICS[name] = fn
        return fn

    return register


def _ci(case: Any, base: Any) -> list[float] | None:
    est = ratio_of_medians(case, base, level=LEVEL, n_boot=N_BOOT, seed=SEED)
    return [est.ci_low, est.ci_high] if math.isfinite(est.ci_low) and math.isfinite(est.ci_high) else None


@register_metric("time_ratio")
def _time_ratio(ctx: Context, out: dict, case: Mapping[str, Any], base: Mapping[str, Any] | None) -> str | None:
    a, b = finite(case.get("median_ms")), finite(base.get("median_ms") if base else None)
    if a is None or b is None or b <= 0:
        return f"no usable median_ms (case {a}, baseline {b})"
    out["value"] = a / b
    out["ci95"] = _ci(sample_of(case), sample_of(base))
    return None


@register_metric("mem_ratio")
def _mem_ratio(ctx: Context, out: dict, case: Mapping[str, Any], base: Mapping[str, Any] | None) -> str | None:
    a, b = finite(case.get("peak_mem_bytes")), finite(base.get("peak_mem_bytes") if base else None)
    if a is None or b is None or b <= 0:
        return f"no usable peak_mem_bytes (case {a}, baseline {b})"
    out["value"] = a / b
    return None


def floor_of(row: Mapping[str, Any], bandwidth_gbs: float) -> dict[str, Any]:
    """Bytes of x read once plus the (b, n) weights written once, over the copy bandwidth."""
    size = ITEMSIZE.get(str(row.get("dtype")), 4)
    bytes_read = int(row["batch"]) * int(row["input_dim"]) * size
    bytes_written = int(row["batch"]) * int(row["experts"]) * size
    total = bytes_read + bytes_written
    return {"bytes_read": bytes_read, "bytes_written": bytes_written, "bytes": total,
            "bandwidth_gbs": bandwidth_gbs, "floor_ms": total / (bandwidth_gbs * 1e9) * 1e3}


@register_metric("floor_ratio")
def _floor_ratio(ctx: Context, out: dict, case: Mapping[str, Any], base: Mapping[str, Any] | None) -> str | None:
    if ctx.bandwidth_gbs is None:
        return f"no copy bandwidth ({ctx.bandwidth_problem})"
    out["floor"] = floor_of(case, ctx.bandwidth_gbs)
    a, floor_ms = finite(case.get("median_ms")), out["floor"]["floor_ms"]
    if a is None or not floor_ms > 0:
        return f"no usable median_ms ({a}) or floor ({floor_ms})"
    out["value"] = a / floor_ms
    out["ci95"] = _ci(sample_of(case), constant_sample(floor_ms))
    return None


@register_metric("timer_vs_do_bench")
def _timer_vs_do_bench(ctx: Context, out: dict, case: Mapping[str, Any], base: Any) -> str | None:
    name = case.get("workload")
    work = ((ctx.fidelity or {}).get("workloads") or {}).get(name)
    if work is None:
        return f"no timing-fidelity result for workload {name!r}"
    timer = sample_of({"samples_ms": work.get("harness_rounds_ms"), "median_ms": work.get("harness_median_ms")})
    bench = sample_of({"samples_ms": work.get("do_bench_rounds_ms"), "median_ms": work.get("do_bench_median_ms")})
    est = ratio_of_medians(timer, bench, level=LEVEL, n_boot=N_BOOT, seed=SEED)
    if not math.isfinite(est.ratio):
        return f"no usable medians for workload {name!r}"
    out["value"] = est.ratio
    out["ci95"] = _ci(timer, bench)
    return None


def _is_met(target: Target, value: float) -> bool:
    if target.metric == "timer_vs_do_bench":
        return abs(value - 1.0) <= target.threshold
    return value <= target.threshold


# ------------------------------------------------------------------------------------------------------------
# Evaluation.
# ------------------------------------------------------------------------------------------------------------
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
    return f"rows from different commits/GPUs: {sorted(map(str, seen))}" if len(seen) > 1 else None


def _evaluate_one(target: Target, rows: Rows | None, impl: Any, ctx: Context) -> tuple[dict[str, Any], list]:
    """One target for one implementation of its case, and the rows it used."""
    out: dict[str, Any] = {"name": target.name, "impl": impl, "shape": target.shape, "mode": target.case.get("mode"),
                           "metric": target.metric, "value": None, "ci95": None, "threshold": target.threshold,
                           "met": None}
    used: list[Mapping[str, Any]] = []
    reasons: list[str] = []
    case = base = None
    if rows is not None:
        want = {**target.case, "impl": impl}
        case = rows.get(want)
        reasons += [] if case is not None else [rows.missing_reason(want)]
        used += [case] if case is not None else []
        if target.baseline:
            pairing = rows.pairing(target.baseline)
            base_want = pairing.wanted(want)
            out["baseline_impl"] = base_want.get("impl")
            base = rows.get(base_want)
            reasons += [] if base is not None else [rows.missing_reason(base_want)]
            used += [base] if base is not None else []
    out["rows"] = [row_ref(r) for r in used]
    if not reasons:
        reason = METRICS[target.metric](ctx, out, case if case is not None else target.case, base)
        reasons += [reason] if reason else []
    if reasons:
        out.update(reason="; ".join(reasons), value=None, ci95=None, status="not measured")
        return out, used
    out["met"] = _is_met(target, out["value"])
    out["status"] = "met" if out["met"] else "missed"
    if target.metric != "timer_vs_do_bench":
        out["ci_verdict"] = _ci_verdict(out["ci95"], target.threshold)
    warning = _same_run_warning(used)
    if warning:
        out["warning"] = warning
    return out, used


def _rows_for(rows: Sequence[Mapping[str, Any]], targets: Sequence[Target]) -> dict[tuple, Rows]:
    """One ``Rows`` per distinct ``select`` of the row-reading targets."""
    shape_keys = list(dict.fromkeys(k for t in targets if t.metric != "timer_vs_do_bench" for k in t.shape))
    out: dict[tuple, Rows] = {}
    for t in targets:
        key = tuple(sorted(t.select.items()))
        if t.metric != "timer_vs_do_bench" and key not in out:
            out[key] = Rows(rows, t.select, shape_keys)
    return out


def evaluate_targets(
    rows: Sequence[Mapping[str, Any]],
    targets: Sequence[Target],
    *,
    bandwidth_gbs: float | None = None,
    bandwidth_problem: str | None = None,
    fidelity: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every target on the results ``rows`` (dicts, as ``harness.results.read_rows`` gives them), for every
    implementation of its case's gate (``eager`` always) when the case names none: ``status`` ``met`` /
    ``missed`` / ``not measured`` with the value, ``ci95`` and the rows used (see the module docstring)."""
    ctx = Context(bandwidth_gbs, bandwidth_problem, fidelity)
    by_select = _rows_for(rows, targets)
    out = []
    for target in targets:
        if target.metric == "timer_vs_do_bench":
            out.append(_evaluate_one(target, None, None, ctx)[0])
            continue
        found = by_select[tuple(sorted(target.select.items()))]
        impls = [target.case["impl"]] if "impl" in target.case else (
            ["eager"] + [i for i in found.impls(target.case.get("gate")) if i != "eager"])
        out += [_evaluate_one(target, found, impl, ctx)[0] for impl in impls]
    return out


def overview(rows: Rows, targets: Sequence[Target]) -> list[dict[str, Any]]:
    """Every gate and impl at the targets' shapes: the median per mode, peak memory, and the ratio to the
    first target's baseline (paired as the targets pair)."""
    timed = [t for t in targets if t.baseline]
    if not timed:
        return []
    pairing = rows.pairing(timed[0].baseline)
    shapes = list({tuple(t.shape.items()): t.shape for t in targets if t.metric != "timer_vs_do_bench"}.values())
    modes = list(dict.fromkeys(t.case.get("mode") for t in targets if t.metric != "timer_vs_do_bench"))
    out = []
    for gate in sorted({r.get("gate") for r in rows.index.values()}):
        for impl in rows.impls(gate):
            for shape in shapes:
                entry: dict[str, Any] = {"gate": gate, "impl": impl, "shape": shape_text(shape)}
                found = False
                for mode in modes:
                    row = rows.get({**shape, "gate": gate, "impl": impl, "mode": mode})
                    base = pairing.baseline_of(row) if row is not None else None
                    median = finite(row.get("median_ms")) if row else None
                    base_median = finite(base.get("median_ms")) if base else None
                    found = found or row is not None
                    entry[f"{mode}_median_ms"] = median
                    entry[f"{mode}_peak_mem_bytes"] = row.get("peak_mem_bytes") if row else None
                    entry[f"{mode}_ratio_to_{timed[0].baseline.get('gate', 'baseline')}"] = (
                        median / base_median if median is not None and base_median else None)
                if found:
                    out.append(entry)
    return out


# ------------------------------------------------------------------------------------------------------------
# Copy bandwidth.
# ------------------------------------------------------------------------------------------------------------
def _do_bench_ms(fn: Callable[[], None]) -> float:
    import triton.testing

    try:
        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    except TypeError:  # an older Triton without return_mode
        return float(triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5]))


def _events_ms(fn: Callable[[], None]) -> float:
    import torch

    for _ in range(EVENT_WARMUP):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(EVENT_REPS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure_bandwidth() -> tuple[float, str]:
    """Device copy bandwidth in GB/s (1e9 bytes/s): ``2 * nbytes / time`` of a 1 GiB float32 ``copy_``."""
    import torch

    src = torch.ones(COPY_BYTES // 4, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    nbytes = src.numel() * src.element_size()

    def copy() -> None:
        dst.copy_(src)

    try:
        ms = _do_bench_ms(copy)
        method = "triton.testing.do_bench median (warmup 25 ms, rep 100 ms) of dst.copy_(src), 1 GiB float32"
    except Exception as exc:  # noqa: BLE001 - not importable, or failing: CUDA events instead
        ms = _events_ms(copy)
        method = (f"CUDA events median of {EVENT_REPS} reps after {EVENT_WARMUP} warm-up of dst.copy_(src), "
                  f"1 GiB float32 (triton.testing.do_bench not used: {f'{type(exc).__name__}: {exc}'[:200]})")
    return 2 * nbytes / (ms * 1e-3) / 1e9, f"{method}: {ms:.4f} ms for {2 * nbytes} bytes read + written"


def _cuda_available() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as exc:
        return False, f"PyTorch is not importable ({exc})"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False"
    return True, ""


def _bandwidth(given: float | None) -> tuple[float | None, str, str | None]:
    """(GB/s or None, how it was obtained, the problem when it could not be measured); ValueError without CUDA."""
    if given is not None:
        if not (isinstance(given, (int, float)) and math.isfinite(given) and given > 0):
            raise ValueError(f"bandwidth_gbs: expected a positive number of GB/s; got {given!r}")
        return float(given), "given (--bandwidth-gbs)", None
    available, why = _cuda_available()
    if not available:
        raise ValueError(f"bandwidth_gbs: --bandwidth-gbs is required without a CUDA device to measure it on ({why})")
    try:
        gbs, method = measure_bandwidth()
        return gbs, method, None
    except Exception as exc:  # noqa: BLE001 - the other targets are still worth writing
        problem = f"{type(exc).__name__}: {exc}"
        return None, f"measurement failed: {problem}", problem


# ------------------------------------------------------------------------------------------------------------
# Output and the command.
# ------------------------------------------------------------------------------------------------------------
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


def print_summary(result: Mapping[str, Any], file: Any = None) -> None:
    """The targets and the overview table, one line each."""
    def say(text: str) -> None:
        print(text, file=file or sys.stdout)

    prov = result.get("provenance") or {}
    say(f"source: {result['source']} ({result['selected_ok_rows']} selected ok rows, "
        f"{result['unreadable_lines']} unreadable lines)")
    say(f"gpu: {prov.get('gpu')}  torch {prov.get('torch')}  cuda {prov.get('cuda')}  commit {prov.get('commit')}")
    say(f"copy bandwidth: {_fmt(result['bandwidth_gbs'], '.1f')} GB/s ({result['bandwidth_method']})")
    for t in result["targets"]:
        met = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        ci = f" [{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}]" if t.get("ci95") else ""
        line = (f"  {met:8s} {t['name']:26s} {str(t['impl'] or '-'):10s} {t['metric']:17s} {_fmt(t['value'])}{ci} "
                f"<= {t['threshold']}")
        if t["met"] is None:
            line += f"  ({t.get('reason')})"
        elif t.get("floor"):
            line += f"  (floor {t['floor']['floor_ms']:.4f} ms)"
        say(line)
    for e in result["table"]:
        cells = "  ".join(f"{k.removesuffix('_median_ms')} {_fmt(v, '.4f')}" for k, v in e.items()
                          if k.endswith("_median_ms"))
        say(f"  {e['gate']:14s} {e['impl']:10s} {e['shape']:26s} {cells}")


def _read_results(paths: Sequence[str | Path]) -> tuple[list[dict], list[str], dict | None]:
    """Results rows of the JSON Lines files (the newest row of each case of a file: a resumed run appends its
    reruns), their problems, and the timing-fidelity document if one is given."""
    from harness.results import latest_rows, read_rows

    rows, problems, fidelity = [], [], None
    for path in map(Path, paths):
        if not path.is_file():
            raise ValueError(f"results_paths: expected results files; got {path}: no such file")
        if path.suffix == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or "workloads" not in doc:
                raise ValueError(f"results_paths: expected a timing-fidelity JSON (with 'workloads'); got {path}")
            fidelity = doc
            continue
        read = read_rows(path)
        cannot = [p for p in read.problems if ": cannot read:" in p]
        if cannot:
            raise ValueError(f"results_paths: {cannot[0]}")
        rows += list(latest_rows(read.rows).values())
        problems += read.problems
    return rows, problems, fidelity


def _summary_counts(evaluated: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    summary: dict[str, dict[str, int]] = {}
    for t in evaluated:
        counts = summary.setdefault(str(t["impl"] or "-"), {"met": 0, "not_met": 0, "unknown": 0})
        counts[{True: "met", False: "not_met", None: "unknown"}[t["met"]]] += 1
    return summary


def run_targets(
    results_paths: Sequence[str | Path],
    targets_path: str | Path = DEFAULT_TARGETS,
    out_json: str | Path = "targets.json",
    *,
    bandwidth_gbs: float | None = None,
) -> int:
    """Evaluate the targets of ``targets_path`` on the results files (kernels suite JSON Lines, and a
    timing-fidelity JSON for ``timer_vs_do_bench``), write ``out_json`` and print a summary on stdout.

    Exit code: 0 when the file is written, whether or not the targets are met; 2 on unusable input (a missing
    file, a bad targets file, no bandwidth without CUDA when a target needs one), with the reason on stderr.

    CLI: ``gatebench targets RESULTS... [--targets suites/targets/kernels.toml] --out OUT.json
    [--bandwidth-gbs X]``.
    """
    try:
        targets = load_targets(targets_path)
        rows, problems, fidelity = _read_results(results_paths)
        needs_floor = any(t.metric == "floor_ratio" for t in targets)
        bandwidth, method, problem = _bandwidth(bandwidth_gbs) if needs_floor else (None, "not needed", None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    evaluated = evaluate_targets(rows, targets, bandwidth_gbs=bandwidth, bandwidth_problem=problem,
                                 fidelity=fidelity)
    selected = next(iter(_rows_for(rows, targets).values()), None)
    used = [r for t in evaluated for r in t["rows"]]
    first = next((r for r in rows if r.get("case_id") == used[0]["case_id"]), None) if used else None
    first = first or (selected.ok_rows[0] if selected and selected.ok_rows else {})
    result = {
        "bandwidth_gbs": bandwidth, "bandwidth_method": method,
        "source": ", ".join(str(p) for p in results_paths), "targets_file": str(targets_path),
        "provenance": first.get("provenance"),
        "selected_ok_rows": len(selected.ok_rows) if selected else 0,
        "duplicate_rows": selected.duplicates if selected else 0,
        "unreadable_lines": len(problems), "problems": problems[:20],
        "bootstrap": {"level": LEVEL, "resamples": N_BOOT, "seed": SEED, "statistic": "ratio of medians"},
        "targets": evaluated, "summary": _summary_counts(evaluated),
        "table": overview(selected, targets) if selected else [],
    }
    result = _clean(result)
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    print_summary(result)
    print(f"wrote {out}")
    return 0


__all__ = ["DEFAULT_TARGETS", "METRICS", "Target", "evaluate_targets", "load_targets", "register_metric",
           "run_targets"]
