"""One row per case from the per-process rows of a run timed in several processes (``harness.processes``).

A suite with ``processes = P`` times every case in ``P`` fresh worker processes, one after the other, and writes
each process's row as it comes (``process`` 0..P-1, ``processes`` P, the run's ``run_id``), so that a crash loses
no completed process. Everything that reads results (``harness.results.latest_rows``, ``--resume``, the reports,
``gatebench compare``) sees one row per case: ``merge_process_rows`` joins the rows of a case and run into one, at
the place of its last part:

* every part ``ok``: the samples of all processes in process order, their rounds renumbered one after the other
  (process ``p``'s round ``r`` becomes ``r`` plus the rounds of the processes before it), ``round_processes`` the
  process of each merged round, the statistics of all samples, ``probe_ms`` joined, ``rounds`` summed, the
  first process's warm-up and estimate, the worst accuracy error, the largest peak memory, the first load
  average before and the last after, and ``process`` None;
* a part ``failed``: the case is failed, with that process's error (the first such process);
* every part ``skipped``: skipped, with the first one's reason; some skipped and others not: failed (a case must
  be timed in every process or in none);
* fewer parts than ``processes``: failed, ``incomplete`` (the run stopped before the other processes; ``--resume``
  times the missing ones in the same run).

A part that appears twice (a resumed run timing a failed process again) counts once: the later row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.schema import TIMING_STATS
from harness.timer import summarize

__all__ = ["merge_process_rows", "merge_parts", "is_part", "INCOMPLETE"]

INCOMPLETE = "incomplete"
_WORST = ("max_abs_err", "max_grad_err", "fd_grad_err", "ambiguous_rows")


def is_part(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is one process's row of a case timed in several processes."""
    return row.get("process") is not None and row.get("run_id") is not None


def merge_process_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` in file order with the parts of each (kind, suite, case, run) merged into one row (see the module
    docstring), standing where the last part stood; other rows unchanged."""
    out: list[Any] = []
    parts: dict[tuple, list[Mapping[str, Any]]] = {}
    place: dict[tuple, int] = {}
    for row in rows:
        if not is_part(row):
            out.append(row)
            continue
        key = (row.get("kind"), row.get("suite"), row.get("case_id"), row.get("run_id"))
        parts.setdefault(key, []).append(row)
        if key in place:
            out[place[key]] = None
        place[key] = len(out)
        out.append(key)
    return [merge_parts(parts[item]) if isinstance(item, tuple) else item for item in out if item is not None]


def _newest_per_process(parts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    newest: dict[int, Mapping[str, Any]] = {}
    for row in parts:
        newest[int(row["process"])] = row
    return [newest[p] for p in sorted(newest)]


def merge_parts(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The row of one case from its per-process rows of one run (see the module docstring)."""
    if not parts:
        raise ValueError("parts: expected at least one per-process row; got none")
    rows = _newest_per_process(parts)
    expected = max(int(row.get("processes") or 1) for row in rows)
    present = [int(row["process"]) for row in rows]
    statuses = {row.get("status") for row in rows}
    failed = [row for row in rows if row.get("status") == "failed"]
    if failed:
        row = failed[0]
        return _whole(row, expected, "failed", f"process {row['process']} of {expected}: {row.get('error')}")
    if statuses == {"skipped"}:
        return _whole(rows[0], expected, "skipped", rows[0].get("error"))
    if "skipped" in statuses:
        skipped = [row["process"] for row in rows if row.get("status") == "skipped"]
        return _whole(rows[-1], expected, "failed", f"skipped in process(es) {skipped} of {expected} and timed "
                                                     "in the others; expected the same in every process")
    if len(rows) < expected:
        return _whole(rows[-1], expected, "failed",
                      f"{INCOMPLETE}: timed in process(es) {present} of {expected}; the run stopped before the "
                      "others (--resume times them in the same run)")
    return _joined(rows, expected)


def _whole(row: Mapping[str, Any], expected: int, status: str, error: Any) -> dict[str, Any]:
    """``row`` as the case's row: its status and error replaced, no process of its own."""
    out = dict(row)
    if status != "ok":  # no timing of a case that was not timed in every process
        out.update(dict.fromkeys(TIMING_STATS))
    out.update(status=status, error=error, process=None, processes=expected, run_id=row.get("run_id"))
    return out


def _joined(rows: Sequence[Mapping[str, Any]], expected: int) -> dict[str, Any]:
    """The ok row of all processes' samples."""
    samples: list[float] = []
    sample_rounds: list[int] = []
    round_processes: list[int] = []
    probe: list[float] | None = []
    offset = 0
    for row in rows:
        values = list(row.get("samples_ms") or [])
        local = row.get("sample_rounds")
        local = list(local) if local is not None else [0] * len(values)
        ran = int(row.get("rounds") or (max(local) + 1 if local else 1))
        samples.extend(values)
        sample_rounds.extend(offset + int(r) for r in local)
        round_processes.extend([int(row["process"])] * ran)
        offset += ran
        got = row.get("probe_ms")
        probe = probe + list(got) if probe is not None and got is not None and len(got) == ran else None
    first, last = rows[0], rows[-1]
    out = {**last, **(summarize(samples) if samples else {}), "sample_rounds": sample_rounds,
           "round_processes": round_processes, "rounds": offset, "probe_ms": probe, "process": None,
           "processes": expected, "round_seed": first.get("round_seed"), "warmup_reps": first.get("warmup_reps"),
           "estimate_ms": first.get("estimate_ms"), "compile_ms": first.get("compile_ms"),
           "load_before": first.get("load_before"), "load_after": last.get("load_after")}
    for key in (*_WORST, "peak_mem_bytes"):
        values = [row.get(key) for row in rows if row.get(key) is not None]
        out[key] = max(values) if values else None
    for key, pick in (("started_at", min), ("ended_at", max)):
        values = [row.get(key) for row in rows if row.get(key) is not None]
        if values:
            out[key] = pick(values)
    if probe is None:
        out["probe_version"] = None
    return out
