"""Two-digit images built from scikit-learn's bundled digits, in the manner of MultiMNIST (not MultiMNIST itself).

``load_digits`` ships 1,797 8x8 grey-level digits (values 0-16) inside scikit-learn's wheel: no download. The
construction follows the one the DSelect-k authors' follow-up code uses to build MultiMNIST, scaled to 8x8 digits:

1. The source digits are shuffled with ``default_rng([data_seed, 0])`` and split into disjoint **pools**
   (60% train, 20% validation, 20% test) *before* any pairing: no source image of a test example is ever seen in
   training or validation.
2. Each example of a split draws a left digit ``a`` and a different right digit ``b`` from that split's pool only
   (``default_rng([data_seed, 1, split index])``), with replacement across examples.
3. Both go on a 10x10 canvas: ``a`` at the top left, ``b`` shifted ``shift`` pixels (default 2) right and down;
   intensities are summed and capped at 16, then scaled to [0, 1]. With shift 2 the two digits share a 6x6 square,
   56% of a digit (``overlap_fraction``; MultiMNIST's 28x28 digits shifted by 8 overlap 51%).

Tasks (``TASKS``, the labels of one image): ``left`` and ``right`` (the two digits, 10 classes each, MultiMNIST's
two tasks), ``sum`` (``left + right``, 19 classes) and ``parity`` (of the sum, 2 classes): the 3-4 task variants.
Everything is a deterministic function of ``DigitsSpec``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TASKS", "CLASSES", "SPLITS", "POOL_FRACTIONS", "DigitsSpec", "DigitsData", "load_source",
           "overlap_fraction", "make_digits"]

TASKS: tuple[str, ...] = ("left", "right", "sum", "parity")
CLASSES: dict[str, int] = {"left": 10, "right": 10, "sum": 19, "parity": 2}
SPLITS: tuple[str, ...] = ("train", "val", "test")
POOL_FRACTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)
DIGIT, MAX_INTENSITY = 8, 16.0


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}; got {value!r}")
    return int(value)


def check_tasks(tasks: Any) -> tuple[str, ...]:
    """A non-empty tuple of distinct task names; a comma-separated string is accepted too."""
    if isinstance(tasks, str):
        tasks = tuple(t.strip() for t in tasks.split(","))
    if not isinstance(tasks, (tuple, list)) or not tasks or len(set(tasks)) != len(tasks) or any(
            t not in TASKS for t in tasks):
        raise ValueError(f"tasks: expected distinct names among {', '.join(TASKS)}; got {tasks!r}")
    return tuple(tasks)


@dataclass(frozen=True)
class DigitsSpec:
    """What the data set is: ``tasks``, examples per split (``train``, ``val``, ``test``), the right digit's
    ``shift`` in pixels (0-7) and ``data_seed`` (pools and pairing)."""

    tasks: tuple[str, ...] = ("left", "right")
    train: int = 4000
    val: int = 1000
    test: int = 1000
    shift: int = 2
    data_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", check_tasks(self.tasks))
        for name in ("train", "val", "test"):
            _check_int(name, getattr(self, name), 1)
        if _check_int("shift", self.shift, 0) >= DIGIT:
            raise ValueError(f"shift: expected an integer in 0..{DIGIT - 1}; got {self.shift!r}")
        _check_int("data_seed", self.data_seed, 0)

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(CLASSES[t] for t in self.tasks)

    @property
    def side(self) -> int:
        return DIGIT + self.shift

    @property
    def input_dim(self) -> int:
        return self.side * self.side


@dataclass
class DigitsData:
    """The data: per split ``x[split] (N, side * side)`` float64 in [0, 1], ``y[split] (N, T)`` int64 labels,
    ``pairs[split] (N, 2)`` the source indices (left, right) and ``pools[split]`` the source digits it draws from."""

    spec: DigitsSpec
    x: dict[str, np.ndarray] = field(default_factory=dict)
    y: dict[str, np.ndarray] = field(default_factory=dict)
    pairs: dict[str, np.ndarray] = field(default_factory=dict)
    pools: dict[str, np.ndarray] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def load_source() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: ``images (1797, 8, 8)`` float64 in 0..16 and ``labels (1797,)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = np.asarray(digits.images, dtype=np.float64), np.asarray(digits.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def overlap_fraction(shift: int) -> float:
    """The share of one digit's square that the other covers: ``(8 - shift)^2 / 64``."""
    return (DIGIT - shift) ** 2 / DIGIT**2


def _pools(count: int, data_seed: int) -> dict[str, np.ndarray]:
    order = np.random.default_rng([data_seed, 0]).permutation(count)
    cuts = np.cumsum([int(round(f * count)) for f in POOL_FRACTIONS[:-1]])
    return dict(zip(SPLITS, np.split(order, cuts), strict=True))


def _pairs(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` (left, right) source indices from ``pool``, the two of a pair always different images."""
    ia = rng.integers(len(pool), size=count)
    ib = (ia + 1 + rng.integers(len(pool) - 1, size=count)) % len(pool)
    return np.stack([pool[ia], pool[ib]], axis=1)


def _compose(images: np.ndarray, pairs: np.ndarray, shift: int) -> np.ndarray:
    side = DIGIT + shift
    canvas = np.zeros((len(pairs), side, side))
    canvas[:, :DIGIT, :DIGIT] += images[pairs[:, 0]]
    canvas[:, shift:shift + DIGIT, shift:shift + DIGIT] += images[pairs[:, 1]]
    return np.minimum(canvas, MAX_INTENSITY).reshape(len(pairs), -1) / MAX_INTENSITY


def _labels(labels: np.ndarray, pairs: np.ndarray, tasks: tuple[str, ...]) -> np.ndarray:
    left, right = labels[pairs[:, 0]], labels[pairs[:, 1]]
    by_name = {"left": left, "right": right, "sum": left + right, "parity": (left + right) % 2}
    return np.stack([by_name[t] for t in tasks], axis=1).astype(np.int64)


def make_digits(spec: DigitsSpec | None = None) -> DigitsData:
    """Build the data set of ``spec`` (see the module docstring); deterministic."""
    spec = spec or DigitsSpec()
    if not isinstance(spec, DigitsSpec):
        raise ValueError(f"spec: expected a DigitsSpec; got {spec!r}")
    images, labels = load_source()
    data = DigitsData(spec, pools=_pools(len(images), spec.data_seed))
    for index, split in enumerate(SPLITS):
        rng = np.random.default_rng([spec.data_seed, 1, index])
        pairs = _pairs(data.pools[split], getattr(spec, split), rng)
        data.pairs[split] = pairs
        data.x[split] = _compose(images, pairs, spec.shift)
        data.y[split] = _labels(labels, pairs, spec.tasks)
    return data
