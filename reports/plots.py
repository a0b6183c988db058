"""Figures of a report (seaborn on long-form rows), each returned as PNG bytes.

- ``time_vs_experts`` / ``time_vs_batch``: median time (log scale) against the number of experts or the batch,
  ``hue`` = gate (with its implementation), ``style`` = framework, one panel per mode. The other shape columns
  are held at their most common value so that each line varies one thing.
- ``forward_backward``: median time per gate, bars per mode (fwd / bwd / fwdbwd), a panel per framework.
- ``torch_vs_tf``: median time per gate, bars per framework, a panel per mode (only with both frameworks).
- ``recovery_f1``: recovery F1 per gate: every seed as a point, the mean with a 95% interval, hue = framework.
- ``support_stability``: see ``support_stability``.

A figure whose data are absent is left out (the report lists what it skipped and why).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from .tables import SHAPE_KEYS


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    png: bytes


def _setup():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _timing(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[(frame["kind"] == "timing") & (frame["status"] == "ok") & frame["median_ms"].notna()].copy()
    if ok.empty:
        return ok
    impl = ok["impl"].astype(object)
    multi_impl = ok.assign(_impl=impl).groupby("gate")["_impl"].nunique(dropna=True) > 1
    ok["variant"] = [
        f"{g}/{i}" if multi_impl.get(g, False) and isinstance(i, str) else str(g)
        for g, i in zip(ok["gate"], impl, strict=True)
    ]
    ok["mode"] = ok["mode"].astype(object).where(ok["mode"].notna(), "-")
    return ok


def _hold_others(data: pd.DataFrame, vary: str | None) -> tuple[pd.DataFrame, str]:
    """Keep the rows at the most common value of every shape column except ``vary``; say which were held."""
    held = []
    for key in SHAPE_KEYS:
        if key == vary or key not in data or data[key].nunique(dropna=True) <= 1:
            continue
        value = data[key].mode(dropna=True).iloc[0]
        data = data[data[key] == value]
        held.append(f"{key}={value}")
    return data, ", ".join(held)


def time_vs(frame: pd.DataFrame, x: str) -> Figure | None:
    data = _timing(frame)
    if data.empty or data[x].nunique(dropna=True) < 2:
        return None
    data, held = _hold_others(data, x)
    data = data[data[x].notna()].astype({x: float})
    if data[x].nunique() < 2:
        return None
    plt, sns = _setup()
    grid = sns.relplot(
        data=data,
        x=x,
        y="median_ms",
        hue="variant",
        style="framework",
        col="mode",
        kind="line",
        markers=True,
        dashes=True,
        height=3.4,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    grid.set(xscale="log", yscale="log")
    grid.set_axis_labels("number of experts" if x == "experts" else "batch", "median time (ms)")
    grid.figure.suptitle(f"Time vs {x}" + (f" ({held})" if held else ""), y=1.04)
    return Figure(
        f"time_vs_{x}",
        f"Time vs {x}",
        f"Median time per call against {x}; hue = gate, style = framework, a panel per mode."
        + (f" Held: {held}." if held else ""),
        _png(grid.figure),
    )


def _bar_panels(data: pd.DataFrame, held: str, *, hue: str, col: str, log: bool, name: str, title: str,
                caption: str) -> Figure:
    """Median time per gate as bars, ``hue`` within a panel, a panel per ``col``."""
    plt, sns = _setup()
    grid = sns.catplot(
        data=data,
        x="variant",
        y="median_ms",
        hue=hue,
        col=col,
        kind="bar",
        height=3.4,
        aspect=1.3,
        sharey=False,
        errorbar=None,
    )
    grid.set_axis_labels("gate", "median time (ms)")
    for ax in grid.axes.flat:
        if log:
            ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=30)
    grid.figure.suptitle(title + (f" ({held})" if held else ""), y=1.04)
    return Figure(name, title, caption + (f" Held: {held}." if held else ""), _png(grid.figure))


def forward_backward(frame: pd.DataFrame) -> Figure | None:
    data = _timing(frame)
    if data.empty or data["mode"].nunique() < 2:
        return None
    data, held = _hold_others(data, None)
    return _bar_panels(data, held, hue="mode", col="framework", log=False, name="forward_backward",
                       title="Forward vs backward", caption="Median time of each mode per gate, a panel per framework.")


def torch_vs_tf(frame: pd.DataFrame) -> Figure | None:
    data = _timing(frame)
    if data.empty or data["framework"].nunique() < 2:
        return None
    data, held = _hold_others(data, None)
    return _bar_panels(data, held, hue="framework", col="mode", log=True, name="torch_vs_tf",
                       title="PyTorch vs TensorFlow",
                       caption="The same gate in each framework (log scale), a panel per mode.")


def _recovery(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["kind"] == "recovery") & (frame["status"] == "ok")].copy()


def recovery_f1(frame: pd.DataFrame) -> Figure | None:
    data = _recovery(frame)
    if data.empty or data["f1"].notna().sum() == 0:
        return None
    data = data[data["f1"].notna()].astype({"f1": float})
    data["gate"] = data["gate"].astype(str)
    data["framework"] = data["framework"].astype(str)
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    many = data["framework"].nunique() > 1
    sns.stripplot(data=data, x="gate", y="f1", hue="framework", dodge=many, alpha=0.6, ax=ax, jitter=0.15)
    sns.pointplot(
        data=data,
        x="gate",
        y="f1",
        hue="framework",
        dodge=0.4 if many else False,
        linestyle="none",
        errorbar=("ci", 95),
        markers="D",
        ax=ax,
        legend=False,
        palette="dark",
    )
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("support recovery F1")
    ax.set_title("Recovery F1 per gate (points: seeds; diamonds: mean, 95% CI)")
    return Figure(
        "recovery_f1",
        "Recovery F1",
        "Support-recovery F1 per gate: one point per seed, mean with a 95% interval.",
        _png(fig),
    )


# List-valued columns read as a per-checkpoint trace of support changes (steps from ``eval_steps``).
TRACE_COLUMNS: tuple[str, ...] = ("support_changes_trace", "support_stability")


def _trace_column(data: pd.DataFrame) -> str | None:
    for col in TRACE_COLUMNS:
        if col in data and data[col].map(lambda v: isinstance(v, (list, tuple))).any():
            return col
    return None


def support_stability(frame: pd.DataFrame) -> Figure | None:
    """Support stability: a curve per gate over training when the rows carry a per-checkpoint trace
    (``TRACE_COLUMNS``, steps in ``eval_steps``), else ``support_changes`` per seed (how often a row's selected
    set changed over the last half of training; 0 = settled, harness/recovery/metrics.py)."""
    data = _recovery(frame)
    if data.empty:
        return None
    trace = _trace_column(data)
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    if trace is not None:
        long_rows = []
        for _, row in data.iterrows():
            values = row[trace]
            if not isinstance(values, (list, tuple)):
                continue
            steps = row.get("eval_steps")
            if not isinstance(steps, (list, tuple)) or len(steps) != len(values):
                steps = list(range(1, len(values) + 1))
            for step, v in zip(steps, values, strict=True):
                long_rows.append(
                    {
                        "gate": str(row["gate"]),
                        "framework": str(row["framework"]),
                        "step": float(step),
                        "value": float(v),
                    }
                )
        long = pd.DataFrame(long_rows)
        sns.lineplot(
            data=long, x="step", y="value", hue="gate", style="framework", errorbar=("ci", 95), ax=ax
        )
        ax.set_xlabel("training step")
        ax.set_ylabel(trace.replace("_", " "))
        caption = f"{trace} at each checkpoint, mean over seeds with a 95% band."
    elif "support_changes" in data and data["support_changes"].notna().any():
        data = data[data["support_changes"].notna()].astype({"support_changes": float})
        data["gate"], data["framework"] = data["gate"].astype(str), data["framework"].astype(str)
        many = data["framework"].nunique() > 1
        sns.stripplot(
            data=data, x="gate", y="support_changes", hue="framework", dodge=many, jitter=0.15, ax=ax
        )
        ax.set_ylabel("support changes (last half)")
        caption = (
            "Support changes per seed: how many times a row's selected experts changed over the last half "
            "of training (0 = the support has settled)."
        )
    else:
        plt.close(fig)
        return None
    ax.set_title("Support stability over training")
    return Figure("support_stability", "Support stability", caption, _png(fig))


FIGURES: tuple[tuple[str, Callable[[pd.DataFrame], Figure | None], str], ...] = (
    ("time_vs_experts", lambda f: time_vs(f, "experts"), "needs timing rows at two or more expert counts"),
    ("time_vs_batch", lambda f: time_vs(f, "batch"), "needs timing rows at two or more batch sizes"),
    ("forward_backward", forward_backward, "needs timing rows of two or more modes"),
    ("torch_vs_tf", torch_vs_tf, "needs timing rows of both frameworks"),
    ("recovery_f1", recovery_f1, "needs recovery rows with f1"),
    ("support_stability", support_stability, "needs recovery rows with support_changes or a trace"),
)


def make_figures(frame: pd.DataFrame) -> tuple[list[Figure], list[str]]:
    """Every figure that the data allow, and one line per skipped figure saying why."""
    figures: list[Figure] = []
    skipped: list[str] = []
    for name, build, need in FIGURES:
        fig = build(frame)
        if fig is None:
            skipped.append(f"{name}: {need}")
        else:
            figures.append(fig)
    return figures, skipped
