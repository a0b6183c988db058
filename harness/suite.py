"""Suites: declarative grids in TOML (``suites/*.toml``), expanded to cases.

A timing suite (``kind = "timing"``, the default)::

    name = "smoke"
    description = "..."
    [settings]                 # timer and runner settings, all optional (TimingSettings: defaults, checks)
    warmup_ms = 5
    rep_ms = 20
    [[grid]]                   # one or more grids; the suite is their union (duplicates dropped)
    gate = ["softmax", "topk", "dselect_k", "hard_concrete"]
    framework = ["torch", "tf"]
    device = ["cpu"]           # "cpu", "gpu" (alias "cuda")
    impl = ["eager"]           # "eager", "compiled"; dselect_k only: "bitwise", "reference", "triton" (torch, gpu)
    mode = ["fwd", "bwd", "fwdbwd"]
    gating = ["static", "per_example"]
    dtype = ["float32"]
    shapes = [{batch = 64, input_dim = 32, experts = 16, k = 4}]   # explicit shapes, or a product:
    # batch = [4096], input_dim = [256], experts = [8, 16, 32], k = [4]
    [grid.hparams.topk]        # optional gate options, by gate
    noisy = true

Every key of a grid may be a scalar or a list; the grid is the product of the lists. ``bitwise``/``reference``/
``triton`` are dropped for gates other than dselect_k, and ``triton`` for TensorFlow. Static cases have no batch
or input width (None), so the shapes that differ only in those give one static case.

A recovery suite (``kind = "recovery"``) is expanded by ``harness.recovery.suite.expand(suite_dict)`` and takes
no ``[settings]``. A prediction suite (``kind = "prediction"``) with ``trials = 0`` is expanded by
``harness.prediction.suite.expand(suite_dict)`` (every gate x framework x gating x held-out seed at the problem's
knobs); a tuned one (``trials > 0``, the default) is refused: ``gatebench predict`` runs it.

``load_suite`` checks everything before any case runs: the top-level keys (``TIMING_SUITE_KEYS``), the name (a
plain file name: it names the results file), the settings' types and ranges (``TimingSettings``) and every grid
(expanded once, into ``Suite.cases``); a bad value is a ValueError naming the key and the file. A grid of more
than ``CONFIRM_CASES`` cases (counted before expanding) needs ``yes=True``.
Only the standard library and NumPy are used here (``tomllib``), so the GPU machine can expand suites.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import cases
from harness.cases import Case
from harness.recovery import suite as recovery_suite

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

__all__ = [
    "Suite", "TimingSettings", "DEFAULT_SETTINGS", "KINDS", "SUITES_DIR", "load_suite", "resolve_suite",
    "find_suites", "expand", "expand_grid", "filter_params", "FILTER_KEYS", "TIMING_SUITE_KEYS", "WARN_CASES",
    "CONFIRM_CASES", "count_cases", "TUNING_KIND", "peek_suite", "select_cases", "filter_values",
]

KINDS: tuple[str, ...] = ("timing", "recovery", "prediction")
TUNING_KIND = "tuning"  # read by harness.tuning.suite (gatebench tune --suite), not by load_suite
STOP_RULES: tuple[str, ...] = ("fixed", "adaptive")
# What a CPU case's samples are read with: "wall" (perf_counter), "cpu" (the timing thread's CPU time,
# thread_time: a preempted call does not count the time it waited for a core) or "auto" (cpu with one thread).
CLOCKS: tuple[str, ...] = ("auto", "wall", "cpu")
SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


@dataclass(frozen=True)
class TimingSettings(Mapping[str, Any]):
    """The ``[settings]`` of a timing suite, checked when built (ValueError naming the key).

    Read the fields (``settings.rep_ms``); code written against the settings dict can still read it as a
    read-only mapping (``settings["rep_ms"]``, ``dict(settings)``). ``to_json``/``from_json`` carry it across a
    process boundary.
    """

    warmup_ms: float = 25.0  # warm-up budget per case
    rep_ms: float = 100.0  # timed budget per case
    min_reps: int = 5
    max_reps: int = 10_000
    flush_l2: bool = False  # overwrite a 256 MiB buffer before each GPU repetition
    check: bool = True  # accuracy check before timing
    memory: bool = True  # measure peak memory of one call
    max_reference_bytes: int = 4 * 1024**3  # skip dselect_k 'reference' cases that would need more
    threads: int = 1  # intra-op threads per framework (TF: intra and inter op), pinned before timing
    rounds: int = 8  # interleaved rounds: the cases compared with each other are timed in turn, rounds times
    round_seed: int = 0  # seed of each round's shuffled order
    stop: str = "fixed"  # "fixed": `rounds` rounds; "adaptive": until every ratio's CI is within `ci_width`
    ci_width: float = 0.05  # adaptive: relative width (hi - lo) / ratio of the 95% CI of each ratio to Top-k
    max_rounds: int = 40  # adaptive: at most this many rounds
    max_seconds: float = 120.0  # adaptive: at most this long per group of cases
    case_timeout_s: float | None = None  # --isolate: a case's worker is killed after this long (None: no limit)
    clock: str = "auto"  # CPU cases: "wall", "cpu" (thread CPU time; needs threads = 1) or "auto" (cpu at 1 thread)
    processes: int = 1  # time every case in this many fresh processes, one after the other (harness.processes)

    def __post_init__(self) -> None:
        for name in ("warmup_ms", "rep_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name}: expected a finite number >= 0 (milliseconds); got {value!r}")
            if name == "rep_ms" and value == 0:
                raise ValueError("rep_ms: expected a finite number > 0 (milliseconds: the timed budget); got 0")
            object.__setattr__(self, name, float(value))
        timeout = self.case_timeout_s
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not math.isfinite(timeout) \
                    or timeout <= 0:
                raise ValueError(f"case_timeout_s: expected a finite number > 0 (seconds); got {timeout!r}")
            object.__setattr__(self, "case_timeout_s", float(timeout))
        for name, low in (("min_reps", 1), ("max_reps", max(1, _int_or(self.min_reps, 1))),
                          ("max_reference_bytes", 0), ("threads", 1), ("rounds", 1), ("round_seed", 0),
                          ("max_rounds", max(1, _int_or(self.rounds, 1))), ("processes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}; got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("flush_l2", "check", "memory"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name}: expected true or false; got {value!r}")
        for name in ("ci_width", "max_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name}: expected a finite number > 0; got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.stop not in STOP_RULES:
            raise ValueError(f"stop: expected one of {', '.join(STOP_RULES)}; got {self.stop!r}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock: expected one of {', '.join(CLOCKS)}; got {self.clock!r}")
        if self.clock == "cpu" and self.threads != 1:
            raise ValueError(f"clock: 'cpu' reads the timing thread's CPU time and would miss the work of the other "
                             f"intra-op threads; expected threads = 1 with it; got threads = {self.threads}")

        if self.processes > 1 and self.stop != "fixed":
            raise ValueError(f"processes: expected 1 with stop = {self.stop!r} (adaptive rounds stop inside one "
                             f"process); got processes = {self.processes}")

    @property
    def rounds_per_process(self) -> int:
        """Rounds each of the ``processes`` runs: ``rounds / processes``, rounded up."""
        return -(-self.rounds // self.processes)

    def host_clock(self, device: str) -> str:
        """The clock a case on ``device`` is read with on the host: ``"cpu"`` or ``"wall"`` (``auto``: cpu for a
        CPU case at one thread; a GPU case is always wall, around its synchronisation, or device events)."""
        if device != "cpu":
            return "wall"
        if self.clock == "auto":
            return "cpu" if self.threads == 1 else "wall"
        return self.clock

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str | None = None) -> TimingSettings:
        """Settings from a ``[settings]`` table or ``to_json()``; errors name ``settings.<key>`` and ``source``."""
        where = f" (in {source})" if source else ""
        if not isinstance(data, Mapping):
            raise ValueError(f"settings: expected a table; got {type(data).__name__}{where}")
        unknown = sorted(set(data) - set(_SETTING_NAMES))
        if unknown:
            raise ValueError(f"settings: unknown keys {unknown}; expected some of {sorted(_SETTING_NAMES)}{where}")
        try:
            return cls(**data)
        except ValueError as exc:
            raise ValueError(f"settings.{exc}{where}") from None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # Read-only mapping over the fields.
    def __getitem__(self, key: str) -> Any:
        if key not in _SETTING_NAMES:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_SETTING_NAMES)

    def __len__(self) -> int:
        return len(_SETTING_NAMES)


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


_SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TimingSettings))
DEFAULT_SETTINGS = TimingSettings()
_GRID_LISTS = ("gate", "framework", "device", "impl", "mode", "gating", "dtype")
_SHAPE_KEYS = ("batch", "input_dim", "experts", "k")
TIMING_SUITE_KEYS: tuple[str, ...] = ("name", "kind", "description", "settings", "grid")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
WARN_CASES = 10_000  # the command line warns above this many cases
CONFIRM_CASES = 100_000  # load_suite needs yes=True (--yes) above this many
FILTER_KEYS: tuple[str, ...] = ("gate", "framework", "device", "impl", "mode", "gating", "dtype", "experts")


@dataclass(frozen=True)
class Suite:
    """A loaded, checked suite: its name, kind, settings (None for recovery and prediction suites), the raw TOML
    dict, and its cases (``Case`` for a timing suite; the case-column dicts of ``harness.recovery.suite.expand``
    or ``harness.prediction.suite.expand`` for a recovery or prediction suite), in suite order."""

    name: str
    kind: str
    settings: TimingSettings | None
    raw: dict[str, Any] = field(repr=False)
    path: Path | None = None
    description: str = ""
    cases: tuple[Any, ...] = field(default=(), repr=False)

    def with_settings(self, **overrides: Any) -> Suite:
        """The suite with some timing settings replaced (None values are ignored), checked like the file's."""
        given = {key: value for key, value in overrides.items() if value is not None}
        if not given:
            return self
        if self.settings is None:
            raise ValueError(f"{', '.join(given)}: only a timing suite has timing settings; {self.name!r} is a "
                             f"{self.kind} suite")
        merged = TimingSettings.from_json({**self.settings.to_json(), **given}, "the command line")
        return dataclasses.replace(self, settings=merged)

    def case_params(self) -> list[dict[str, Any]]:
        """Each case's identifying columns, in suite order."""
        if self.kind == "timing":
            return [case.params() for case in self.cases]
        return [dict(params) for params in self.cases]


def find_suites(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """The ``*.toml`` suites in ``directory`` (default: ``suites/`` of the source tree), sorted."""
    directory = Path(directory) if directory is not None else SUITES_DIR
    return sorted(directory.glob("*.toml")) if directory.is_dir() else []


def resolve_suite(name_or_path: str | os.PathLike[str]) -> Path:
    """A suite file from a path, or from a bare name looked up in ``./suites`` and the source tree's ``suites/``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name if path.suffix == ".toml" else f"{path.name}.toml"
    for directory in (Path.cwd() / "suites", SUITES_DIR):
        if (directory / stem).is_file():
            return directory / stem
    known = ", ".join(p.stem for p in find_suites()) or "none"
    raise ValueError(f"suite: expected a TOML file or a suite name (known: {known}); got {str(name_or_path)!r}")


def load_suite(name_or_path: str | os.PathLike[str] | Mapping[str, Any], *, yes: bool = False) -> Suite:
    """Read and check a suite (a path, a name, or an already parsed dict): top-level keys, name, settings, grids
    and every case. A timing suite of more than ``CONFIRM_CASES`` cases (counted before expanding) needs
    ``yes=True``; above ``WARN_CASES`` the command line warns."""
    path = None
    if isinstance(name_or_path, Mapping):
        raw = dict(name_or_path)
    else:
        path = resolve_suite(name_or_path)
        try:
            raw = _toml.loads(path.read_text(encoding="utf-8"))
        except _toml.TOMLDecodeError as exc:
            raise ValueError(f"suite: {path} is not valid TOML: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"suite: cannot read {path}: {exc}") from None
    name = raw.get("name") or (path.stem if path else None)
    source = str(path) if path else f"suite {name!r}"
    kind = raw.get("kind", "timing")
    if kind == TUNING_KIND:
        raise ValueError(f"kind: {source} is a tuning suite: run it with gatebench tune --suite {path or 'FILE'}")
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}; got {kind!r} (in {source})")
    _check_name(name, source)
    if not isinstance(raw.get("description", ""), str):
        raise ValueError(f"description: expected a string; got {raw['description']!r} (in {source})")
    if kind in ("recovery", "prediction"):
        try:
            settings, found = None, tuple(_expand_runs(kind, raw, path))
        except ValueError as exc:
            raise ValueError(f"{exc} (in {source})") from None
    else:
        unknown = sorted(set(raw) - set(TIMING_SUITE_KEYS))
        if unknown:
            raise ValueError(f"suite: unknown keys {unknown}; expected some of {list(TIMING_SUITE_KEYS)} "
                             f"(in {source})")
        settings = TimingSettings.from_json(raw.get("settings", {}), source)
        grids = _grid_tables(raw.get("grid"), source)
        _check_count(grids, source, yes)
        found = tuple(_expand_grids(grids, source))
    return Suite(name=name, kind=kind, settings=settings, raw=raw, path=path,
                 description=str(raw.get("description", "")), cases=found)


def _expand_runs(kind: str, raw: Mapping[str, Any], path: Path | None) -> list[dict[str, Any]]:
    """The case columns of a recovery or a fixed-configuration (``trials = 0``) prediction suite."""
    if kind == "recovery":
        return recovery_suite.expand(raw)
    from harness.prediction import suite as prediction_suite

    trials = raw.get("trials", 8)
    if isinstance(trials, int) and not isinstance(trials, bool) and trials > 0:
        raise ValueError(f"trials: expected 0 for gatebench run; got {trials} (a tuned prediction suite: run it "
                         f"with gatebench predict {path or 'SUITE'})")
    return prediction_suite.expand(raw)


def _check_name(name: Any, source: str) -> None:
    """A suite name names its results file (``OUT/<name>.jsonl``): a plain file name, no folder, no ``..``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"name: expected a non-empty string naming the suite; got {name!r} (in {source})")
    if not _PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"name: expected a plain file name (letters, digits, '_', '-', '.'; no '/' or '..'); "
                         f"got {name!r} (in {source})")


def count_cases(grids: Sequence[Mapping[str, Any]]) -> int:
    """How many cases the grids give at most (the product of their lists; before dropping impls that do not apply
    and duplicates), counted without expanding them."""
    total = 0
    for grid in grids:
        if not isinstance(grid, Mapping):
            continue
        size = 1
        for key in (*_GRID_LISTS, *_SHAPE_KEYS, "shapes"):
            value = grid.get(key)
            size *= len(value) if isinstance(value, (list, tuple)) and value else 1
        total += size
    return total


def _check_count(grids: Sequence[Mapping[str, Any]], source: str, yes: bool) -> None:
    count = count_cases(grids)
    if count > CONFIRM_CASES and not yes:
        raise ValueError(f"suite: about {count:,} cases (over {CONFIRM_CASES:,}) in {source}; pass --yes to plan "
                         "and run a grid this large")


def _grid_tables(grids: Any, source: str) -> list[Mapping[str, Any]]:
    if not grids:
        raise ValueError(f"grid: expected at least one [[grid]] table in a timing suite; got none (in {source})")
    if isinstance(grids, Mapping):
        return [grids]
    if not isinstance(grids, list):
        raise ValueError(f"grid: expected [[grid]] tables; got {grids!r} (in {source})")
    for number, grid in enumerate(grids, 1):
        if not isinstance(grid, Mapping):
            raise ValueError(f"grid: expected [[grid]] tables; got {grid!r} as grid {number} (in {source})")
    return grids


def _expand_grids(grids: Sequence[Mapping[str, Any]], source: str) -> list[Case]:
    """The union of the grids' cases, first occurrence kept, in order; errors name the grid and the file."""
    seen: dict[Case, None] = {}
    for number, grid in enumerate(grids, 1):
        try:
            for case in expand_grid(grid):
                seen.setdefault(case, None)
        except TypeError as exc:  # a value of a type no key takes (a table where a list is expected, ...)
            raise ValueError(f"grid: expected scalars or lists of scalars; got {exc} in grid {number} "
                             f"(in {source})") from None
        except ValueError as exc:
            raise ValueError(f"{exc} (grid {number} in {source})") from None
    return list(seen)


def _as_list(key: str, value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"grid.{key}: expected a value or a non-empty list; got an empty list")
        return list(value)
    return [value]


def _shapes(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "shapes" in grid:
        if any(key in grid for key in _SHAPE_KEYS):
            raise ValueError("grid: give either 'shapes' or batch/input_dim/experts/k lists, not both")
        shapes = _as_list("shapes", grid["shapes"])
        out = []
        for shape in shapes:
            if not isinstance(shape, Mapping) or set(shape) != set(_SHAPE_KEYS):
                raise ValueError(f"grid.shapes: expected tables with keys {list(_SHAPE_KEYS)}; got {shape!r}")
            out.append(dict(shape))
        return out
    missing = [key for key in _SHAPE_KEYS if key not in grid]
    if missing:
        raise ValueError(f"grid: expected 'shapes' or all of {list(_SHAPE_KEYS)}; missing {missing}")
    lists = [_as_list(key, grid[key]) for key in _SHAPE_KEYS]
    return [dict(zip(_SHAPE_KEYS, combo, strict=True)) for combo in itertools.product(*lists)]


def expand_grid(grid: Mapping[str, Any]) -> list[Case]:
    """The cases of one ``[[grid]]`` table, in product order."""
    known = set(_GRID_LISTS) | set(_SHAPE_KEYS) | {"shapes", "hparams"}
    unknown = sorted(set(grid) - known)
    if unknown:
        raise ValueError(f"grid: unknown keys {unknown}; expected some of {sorted(known)}")
    missing = [key for key in ("gate", "framework", "mode") if key not in grid]
    if missing:
        raise ValueError(f"grid: expected keys {missing}")
    lists = {key: _as_list(key, grid.get(key, default)) for key, default in (
        ("gate", None), ("framework", None), ("device", "cpu"), ("impl", "eager"), ("mode", None),
        ("gating", "per_example"), ("dtype", "float32"))}
    hparams = grid.get("hparams", {})
    if not isinstance(hparams, Mapping) or not set(hparams) <= set(cases.GATES):
        raise ValueError(f"grid.hparams: expected tables named by gate ({', '.join(cases.GATES)}); got {hparams!r}")
    shapes = _shapes(grid)
    out = []
    for gate, framework, device, impl, mode, gating, dtype in itertools.product(*(lists[k] for k in _GRID_LISTS)):
        if impl in cases.DSELECT_ONLY_IMPLS and gate != "dselect_k":
            continue
        if impl in cases.TORCH_ONLY_IMPLS and framework != "torch":
            continue
        for shape in shapes:
            static = gating == "static"
            out.append(Case(
                gate=gate, framework=framework, device=device, impl=impl, mode=mode, gating=gating,
                batch=None if static else shape["batch"], input_dim=None if static else shape["input_dim"],
                experts=shape["experts"], k=shape["k"], dtype=dtype,
                hparams=tuple(sorted(dict(hparams.get(gate, {})).items())),
            ))
    return out


def expand(suite: Suite | str | os.PathLike[str] | Mapping[str, Any]) -> list[Case]:
    """All cases of a timing suite: the union of its grids, first occurrence kept, in order."""
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    if suite.kind != "timing":
        raise ValueError(f"suite: expand() takes a timing suite; {suite.name!r} has kind {suite.kind!r}")
    return list(suite.cases)


def filter_params(rows: Iterable[Mapping[str, Any]], filters: Mapping[str, Sequence[Any] | None]
                  ) -> list[Mapping[str, Any]]:
    """Keep the cases (dicts of identifying columns) whose value of each filtered key is one of the allowed values
    (compared as text; devices normalised). A key a case does not have does not filter it out (recovery cases have
    other keys)."""
    active = {}
    for key, values in filters.items():
        if not values:
            continue
        allowed = {str(v) for v in values}
        if key == "device":
            allowed = {cases.normalize_device(v) for v in values}
        active[key] = allowed
    return [row for row in rows if all(key not in row or str(row[key]) in allowed
                                       for key, allowed in active.items())]


def peek_suite(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """A suite file's TOML as read, nothing checked: how ``gatebench list`` tells the tuning suites
    (``kind = TUNING_KIND``, which ``load_suite`` refuses) from the others before loading them."""
    path = resolve_suite(name_or_path)
    try:
        return _toml.loads(path.read_text(encoding="utf-8"))
    except (_toml.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"suite: cannot read {path}: {exc}") from None


def filter_values(key: str, values: Sequence[Any]) -> list[str]:
    """The filter's values as the cases' text (devices normalised; an unknown device stays as given)."""
    if key != "device":
        return [str(v) for v in values]
    out = []
    for value in values:
        try:
            out.append(cases.normalize_device(value))
        except ValueError:
            out.append(str(value))
    return out


def _check_filter(key: str, values: Sequence[Any], params: Sequence[Mapping[str, Any]], suite: Suite) -> None:
    import difflib

    if not any(key in row for row in params):
        keys = [k for k in FILTER_KEYS if any(k in row for row in params)]
        raise ValueError(f"--{key}: expected a filter the cases of {suite.kind} suite {suite.name!r} have "
                         f"(--{', --'.join(keys)}); got --{key} {' '.join(map(str, values))}")
    known = sorted({str(row[key]) for row in params if key in row},
                   key=lambda v: (v.isdigit(), len(v) if v.isdigit() else 0, v))  # numbers in numeric order
    for value in filter_values(key, values):
        if value in known:
            continue
        close = [] if key == "device" else difflib.get_close_matches(value, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"--{key}: expected one of {', '.join(known)} (the {key} values of suite {suite.name!r}); "
                         f"got {value!r}{hint}")


def select_cases(suite: Suite, filters: Mapping[str, Sequence[Any] | None]) -> list[Mapping[str, Any]]:
    """The cases (identifying columns) the filters keep, after checking them against the suite's own values: a
    key none of its cases has, a value none has (with a "did you mean" where one is close), or filters that
    together keep no case are a ValueError naming the flag."""
    params = suite.case_params()
    given = {key: list(values) for key, values in filters.items() if values}
    for key, values in given.items():
        _check_filter(key, values, params, suite)
    kept = filter_params(params, given)
    if not kept:
        shown = " ".join(f"--{key} {value}" for key, values in given.items() for value in values)
        raise ValueError(f"filters: expected at least one case; got none of the {len(params)} cases of suite "
                         f"{suite.name!r} with {shown}")
    return kept
