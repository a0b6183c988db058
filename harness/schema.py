"""The columns of a results row, declared once: per row kind, what identifies a case, what was measured, the
dtype a reader gives each column and its unit.

A row (``harness.results.make_row``) is a flat dict: the common columns (``COMMON``), the case's identifying
columns (``RowKind.keys``, then ``RowKind.optional_keys`` when the case has them), descriptive labels, and the
statistics. ``make_row`` checks every declared column it is given against its dtype (``check_values``);
columns that are not declared (the problem knobs of a recovery case, new labels of an adapter) are kept as they
come. ``reports.load`` derives its pandas dtypes from ``reader_dtypes()``.

Dtypes are pandas dtypes: ``string`` (str), ``Int64`` (an integer), ``float64`` (a number; NaN allowed),
``object`` (a list or a dict). ``None`` is allowed in every column but ``schema``, ``kind``, ``suite``,
``case_id`` and ``status``. Units: ``ms`` (milliseconds), ``bytes``, ``""`` (none).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SCHEMA_VERSION", "KINDS", "STATUSES", "Column", "RowKind", "COMMON", "TIMING", "RECOVERY", "PREDICTION",
    "ROW_KINDS",
    "COMMON_KEYS", "TIMING_KEYS", "TIMING_STATS", "RECOVERY_KEYS", "RECOVERY_METRICS", "IDENTIFYING", "row_kind",
    "check_values", "row_problem", "reader_dtypes",
]

SCHEMA_VERSION = 1
KINDS: tuple[str, ...] = ("timing", "recovery", "prediction")
STATUSES: tuple[str, ...] = ("ok", "failed", "skipped")


@dataclass(frozen=True)
class Column:
    """One column: its name, the pandas dtype a reader gives it, its unit and what it holds."""

    name: str
    dtype: str
    unit: str = ""
    doc: str = ""


def _columns(dtype: str, unit: str, names: str) -> tuple[Column, ...]:
    return tuple(Column(name, dtype, unit) for name in names.split())


@dataclass(frozen=True)
class RowKind:
    """The columns of one kind of row. ``complete``: every statistic column is in every row (None where it was
    not measured: a skipped case, a forward-only case's gradient error)."""

    name: str
    keys: tuple[Column, ...]
    statistics: tuple[Column, ...]
    optional_keys: tuple[Column, ...] = ()
    labels: tuple[Column, ...] = ()
    complete: bool = False

    @property
    def columns(self) -> tuple[Column, ...]:
        return COMMON + self.keys + self.optional_keys + self.labels + self.statistics

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.keys)

    @property
    def statistic_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.statistics)

    def blank(self) -> dict[str, None]:
        """The statistic columns a row of this kind always has, all None (the start of every row)."""
        return {name: None for name in self.statistic_names} if self.complete else {}


COMMON: tuple[Column, ...] = (
    Column("schema", "Int64", doc="SCHEMA_VERSION of the writer"),
    Column("kind", "string", doc="one of KINDS"),
    Column("suite", "string", doc="name of the suite the row belongs to"),
    Column("case_id", "string", doc="sorted key=value pairs of the identifying columns"),
    Column("status", "string", doc="one of STATUSES"),
    Column("error", "string", doc="why a case failed or was skipped; None when ok"),
    Column("provenance", "object", doc="machine, CPU, GPU, versions, commit, time"),
    Column("started_at", "float64", doc="Unix time (s) when the worker began the case (its group, for grouped cases)"),
    Column("ended_at", "float64", doc="Unix time (s) when the worker finished the case (its group)"),
)
_REQUIRED = frozenset(("schema", "kind", "suite", "case_id", "status"))

TIMING = RowKind(
    "timing",
    keys=(*_columns("string", "", "gate framework device impl mode gating"),
          *_columns("Int64", "", "batch input_dim experts k"), Column("dtype", "string")),
    optional_keys=(Column("hparams", "string", doc="the gate's options as a JSON object, when it has any"),),
    labels=(Column("gate_impl", "string", doc="which code computed the gate (adapter label)"),
            Column("compiler", "string", doc="none, xla (TF's jit-compiled paths) or inductor (adapter label)"),
            Column("stop", "string", doc="fixed (the suite's rounds) or adaptive (rounds until the CI is narrow)"),
            Column("traceback", "string", doc="the end of the traceback of a failed case")),
    statistics=(
        *_columns("float64", "ms", "median_ms iqr_ms p20_ms p80_ms mean_ms min_ms max_ms"),
        Column("n_samples", "Int64", doc="timed repetitions"),
        Column("samples_ms", "object", "ms", "every timed repetition"),
        Column("peak_mem_bytes", "float64", "bytes", "peak extra memory of one call"),
        Column("compile_ms", "float64", "ms", "first call of a compiled impl"),
        Column("max_abs_err", "float64", doc="forward error against the NumPy reference"),
        Column("max_grad_err", "float64", doc="gradient error against the NumPy reference"),
        Column("fd_grad_err", "float64", doc="NumPy gradient against finite differences"),
        Column("ambiguous_rows", "Int64", doc="Top-k rows left out of the check as ties at the dtype"),
        Column("warmup_reps", "Int64", doc="untimed warm-up calls"),
        Column("estimate_ms", "float64", "ms", "the timer's first estimate of one call"),
        Column("sample_rounds", "object", doc="the round of each entry of samples_ms (interleaved rounds)"),
        Column("rounds", "Int64", doc="rounds the case was timed in, interleaved with the cases of its group"),
        Column("round_seed", "Int64", doc="seed of the rounds' shuffled order"),
        Column("threads", "Int64", doc="intra-op threads of the framework during the timing (TF: 0 = its default)"),
        Column("load_before", "float64", doc="1-minute load average before the case's group was timed"),
        Column("load_after", "float64", doc="1-minute load average after it"),
        Column("usable_cores", "Int64", doc="cores this process may run on (sched_getaffinity)"),
        Column("probe_ms", "object", "ms", "the machine-speed probe's time in each round of the case's group, "
                                           "by round index (harness.probe; CPU cases)"),
        Column("probe_version", "Int64", doc="version of the probe's fixed workload (harness.probe)"),
        Column("clock", "string", doc="what the samples were read with: wall (perf_counter), cpu (the timing "
                                      "thread's CPU time) or events (device events)"),
        Column("processes", "Int64", doc="fresh worker processes the case was timed in, one after the other "
                                         "(harness.processes)"),
        Column("process", "Int64", doc="which of them timed this row (0-based; a merged row has none)"),
        Column("run_id", "string", doc="the run the per-process rows belong to (harness.processes)"),
        Column("round_processes", "object", doc="the process of each round, by round index (merged rows)"),
    ),
    complete=True,
)

RECOVERY = RowKind(
    "recovery",
    keys=(Column("gate", "string"), Column("framework", "string"), Column("seed", "Int64"),
          Column("problem", "string", doc="name of the problem; its knobs are columns too")),
    statistics=(
        *_columns("float64", "", "f1 precision recall exact_support_rate nnz support_changes steps_to_support"),
        *_columns("float64", "", "test_mse final_loss"),
        Column("train_ms", "float64", "ms"),
        Column("noise_floor_mse", "float64"),
        Column("matched_corr", "float64", doc="learned experts: mean correlation with their planted match"),
        Column("selection", "string", doc="how the gate's support is read"),
        Column("support_changes_trace", "object", doc="support changes at each evaluation"),
        Column("eval_steps", "object", doc="the steps of the evaluations"),
    ),
)

PREDICTION = RowKind(
    "prediction",
    keys=(Column("gate", "string"), Column("framework", "string"), Column("seed", "Int64"),
          Column("split", "string", doc="val (a tuning trial) or test (a held-out rerun)"),
          Column("problem", "string", doc="name of the prediction problem; its knobs are columns too"),
          Column("study", "string"), Column("sampler", "string"), Column("trial", "Int64"),
          Column("tuning_seed", "Int64")),
    statistics=(
        *_columns("float64", "", "acc_mean nnz_mean entropy_mean final_loss first_loss"),
        Column("train_ms", "float64", "ms"),
        Column("eval_steps", "object", doc="the steps of the evaluations"),
        Column("nnz_trace", "object", doc="mean non-zero weights per task's gate at each evaluation"),
        Column("acc_trace", "object", doc="mean accuracy over the tasks at each evaluation"),
    ),
)

ROW_KINDS: dict[str, RowKind] = {kind.name: kind for kind in (TIMING, RECOVERY, PREDICTION)}
# What a row read back must have to be used (a report, a comparison, ``--resume``): who made it and which case.
IDENTIFYING: tuple[str, ...] = ("gate", "framework", "case_id", "status", "schema", "suite")
# Times, sizes and counts: never negative.
_NON_NEGATIVE = frozenset(
    [column.name for column in TIMING.statistics if column.dtype in ("float64", "Int64")]
    + [column.name for column in RECOVERY.statistics if column.unit == "ms"] + ["batch", "input_dim", "experts", "k"])

COMMON_KEYS: tuple[str, ...] = tuple(column.name for column in COMMON)
TIMING_KEYS: tuple[str, ...] = TIMING.key_names
TIMING_STATS: tuple[str, ...] = TIMING.statistic_names
RECOVERY_KEYS: tuple[str, ...] = RECOVERY.key_names
# The metrics of a recovery run summarised over seeds (mean +- s.e.) by the CLI and the report, in display order.
RECOVERY_METRICS: tuple[str, ...] = (
    "f1", "precision", "recall", "exact_support_rate", "nnz", "support_changes", "steps_to_support", "test_mse",
    "final_loss",
)


def row_kind(kind: Any) -> RowKind:
    if kind not in ROW_KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}; got {kind!r}")
    return ROW_KINDS[kind]


def _fits(dtype: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if dtype == "string":
        return isinstance(value, str)
    if dtype == "Int64":
        return isinstance(value, numbers.Integral)
    if dtype == "float64":
        return isinstance(value, numbers.Real)
    return isinstance(value, (list, tuple, Mapping))


_EXPECTED = {"string": "a string", "Int64": "an integer", "float64": "a number", "object": "a list or a dict"}


def _value_problem(column: Column, value: Any) -> str | None:
    """What is wrong with ``value`` in ``column`` (its dtype; no negative time, size or count), else None."""
    if value is None:
        return "expected a value; got None" if column.name in _REQUIRED else None
    if not _fits(column.dtype, value):
        return f"expected {_EXPECTED[column.dtype]}; got {value!r}"
    if column.name in _NON_NEGATIVE and value < 0:
        return f"expected a number >= 0; got {value!r}"
    if column.name in ("samples_ms", "sample_rounds", "probe_ms", "round_processes"):
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0]
        if bad:
            return f"expected a list of numbers >= 0; got {bad[0]!r} in it"
    return None


def check_values(kind: str, values: Mapping[str, Any]) -> None:
    """Raise ValueError for a declared column of ``kind`` whose value does not fit its dtype, or a status that
    is not one of ``STATUSES``. Undeclared columns pass."""
    declared = {column.name: column for column in row_kind(kind).columns}
    if "status" in values and values["status"] not in STATUSES:
        raise ValueError(f"status: expected one of {', '.join(STATUSES)}; got {values['status']!r}")
    for name, value in values.items():
        column = declared.get(name)
        if column is None or (value is None and name not in _REQUIRED):
            continue
        if not _fits(column.dtype, value):
            raise ValueError(f"{name}: expected {_EXPECTED[column.dtype]} (a {kind} row's {column.dtype} column); "
                             f"got {value!r}")


def row_problem(row: Any) -> str | None:
    """Why a row read from a results file cannot be used (None when it can): not a row of a known kind, an
    identifying column missing (``IDENTIFYING``), another ``SCHEMA_VERSION``, an unknown status, a value that
    does not fit its column, a negative time, size or count, ``samples_ms`` and ``sample_rounds`` of unequal
    length. Readers leave such rows out of reports, comparisons and ``--resume`` alike."""
    if not isinstance(row, Mapping) or row.get("kind") not in KINDS:
        return f"not a gatebench row (no 'kind' {'/'.join(KINDS)})"
    kind = row["kind"]
    missing = [name for name in IDENTIFYING if row.get(name) in (None, "")]
    if missing:
        return f"{kind} row without {', '.join(missing)}"
    version = row["schema"]
    if isinstance(version, bool) or not isinstance(version, numbers.Integral):
        return f"column 'schema': expected an integer; got {version!r}"
    if version != SCHEMA_VERSION:
        return f"a schema {version} row; this gatebench reads schema {SCHEMA_VERSION} rows only"
    if row["status"] not in STATUSES:
        return f"column 'status': expected one of {', '.join(STATUSES)}; got {row['status']!r}"
    for column in row_kind(kind).columns:
        problem = _value_problem(column, row.get(column.name))
        if problem:
            return f"column {column.name!r}: {problem}"
    samples, rounds = row.get("samples_ms"), row.get("sample_rounds")
    if samples is not None and rounds is not None and len(samples) != len(rounds):
        return f"samples_ms has {len(samples)} entries and sample_rounds {len(rounds)}; expected as many"
    probe, ran = row.get("probe_ms"), row.get("rounds")
    if probe is not None and isinstance(ran, int) and len(probe) != ran:
        return f"probe_ms has {len(probe)} entries for {ran} rounds; expected one per round"
    return None


def reader_dtypes() -> dict[str, str]:
    """Every declared column of every kind and its pandas dtype, common columns first, in declaration order."""
    out: dict[str, str] = {}
    for kind in ROW_KINDS.values():
        for column in kind.columns:
            if out.setdefault(column.name, column.dtype) != column.dtype:
                raise AssertionError(f"{column.name}: declared {out[column.name]} and {column.dtype}")
    return out
