"""Figures of a report (matplotlib and seaborn on long-form rows), each returned as PNG bytes (150 dpi).

Every timing figure shows the spread of the raw samples: a point at the median and a line from the 25th to the
75th percentile of ``samples_ms`` (the IQR; ``p20_ms`` / ``p80_ms`` when a row kept no samples), on a log axis
(times of one figure span orders of magnitude), never bars. Legends sit outside the data, to the right.

- ``time_vs_experts`` / ``time_vs_batch``: median time against the number of experts or the batch size (log-log),
  a line per gate and framework with its IQR band, a panel per mode that has two or more sizes. The other shape
  columns are held at their most common value (named in the caption), so that each line varies one thing.
- ``forward_backward``: median time per gate, a point per mode (fwd / bwd / fwdbwd), a panel per framework and
  gating (static and per-example both drawn).
- ``torch_vs_tf``: the same gate in each framework, a panel per mode and gating (only with both frameworks).
- ``recovery_f1``: recovery F1 per gate: every seed as a point, the mean with a 95% interval, hue = framework.
- ``support_stability``: see ``support_stability``.
- ``prediction_accuracy``: test accuracy of the digits benchmark per gate (a point per held-out seed, the mean
  with a 95% interval, hue = framework); drawn by the report beside the headline's prediction sentences.

A figure whose data are absent is left out (the report lists what it skipped and why).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .tables import SHAPE_KEYS

DPI = 150
FRAMEWORK_NAMES = {"torch": "PyTorch", "tf": "TensorFlow"}
MODE_NAMES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}
GATING_NAMES = {"static": "static", "per_example": "per-example"}
TIME_LABEL = "time per call (ms, log scale)"
SPREAD_NOTE = "Points: median of the raw samples; lines: their interquartile range (25th-75th percentile)."


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
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _quartiles(row: pd.Series) -> tuple[float, float]:
    """The 25th and 75th percentile of the row's raw samples (``p20_ms`` / ``p80_ms`` without samples)."""
    samples = row.get("samples_ms")
    if isinstance(samples, (list, tuple, np.ndarray)) and len(samples) >= 2:
        lo, hi = np.percentile(np.asarray(samples, dtype=float), [25, 75])
        return float(lo), float(hi)
    med = float(row["median_ms"])
    lo, hi = row.get("p20_ms"), row.get("p80_ms")
    return (float(lo) if pd.notna(lo) else med), (float(hi) if pd.notna(hi) else med)


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
    for col in ("mode", "gating", "framework"):
        ok[col] = ok[col].astype(object).where(ok[col].notna(), "-")
    ok["median_ms"] = ok["median_ms"].astype(float)
    spread = [_quartiles(row) for _, row in ok.iterrows()]
    ok["q25_ms"], ok["q75_ms"] = [s[0] for s in spread], [s[1] for s in spread]
    return ok


def _hold_others(data: pd.DataFrame, vary: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """Keep the rows at the most common value of every shape column not in ``vary``; say which were held."""
    held = []
    for key in SHAPE_KEYS:
        if key in vary or key not in data or data[key].nunique(dropna=True) <= 1:
            continue
        value = data[key].mode(dropna=True).iloc[0]
        data = data[data[key] == value]
        held.append(f"{key}={value}")
    return data, ", ".join(held)


def log_ticks(ax, axis: str = "y") -> None:
    """Readable ticks on a log axis: plain numbers at 1, 2, 5 x 10^k, no labels on the minor ticks."""
    from matplotlib import ticker

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
    target.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(ticker.NullFormatter())


def _name(value: object) -> str:
    text = str(value)
    return FRAMEWORK_NAMES.get(text, MODE_NAMES.get(text, GATING_NAMES.get(text, text)))


def _legend_outside(fig, handles, labels, title: str) -> None:
    if handles:
        fig.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)


def _panel_grid(plt, rows: list, cols: list, width: float = 3.6, height: float = 2.9):
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(width * len(cols), height * len(rows)),
                             squeeze=False, constrained_layout=True)
    return fig, axes


def _point_intervals(ax, data: pd.DataFrame, hue: str, levels: list, order: list, palette) -> dict:
    """Median points with IQR lines, gates along x, ``hue`` levels side by side; returns the legend handles."""
    handles = {}
    width = 0.6 / max(len(levels), 1)
    for j, level in enumerate(levels):
        part = data[data[hue] == level]
        for _, row in part.iterrows():
            x = order.index(row["variant"]) + (j - (len(levels) - 1) / 2) * width
            med = row["median_ms"]
            err = [[max(med - row["q25_ms"], 0.0)], [max(row["q75_ms"] - med, 0.0)]]
            h = ax.errorbar([x], [med], yerr=err, fmt="o", color=palette[j], capsize=3, markersize=5, lw=1.5)
            handles[level] = h
    ax.set_xticks(range(len(order)), order, rotation=20)
    ax.set_yscale("log")
    log_ticks(ax, "y")
    ax.set_xlim(-0.6, len(order) - 0.4)
    return handles


def _interval_panels(data: pd.DataFrame, held: str, *, hue: str, col: str, name: str, title: str,
                     caption: str) -> Figure:
    """Median time per gate with its IQR, ``hue`` side by side, a panel per ``col`` and per gating."""
    plt, sns = _setup()
    rows, cols = sorted(data["gating"].unique()), sorted(data[col].unique(), key=_order_key)
    levels = sorted(data[hue].unique(), key=_order_key)
    order = sorted(data["variant"].unique(), key=_gate_key)
    palette = sns.color_palette("colorblind", len(levels))
    fig, axes = _panel_grid(plt, rows, cols)
    handles: dict = {}
    for i, gating in enumerate(rows):
        for j, value in enumerate(cols):
            ax = axes[i][j]
            part = data[(data["gating"] == gating) & (data[col] == value)]
            handles.update(_point_intervals(ax, part, hue, levels, order, palette))
            ax.set_title(f"{_name(value)}, {_name(gating)}", fontsize=10)
            ax.set_ylabel(TIME_LABEL if j == 0 else "")
    _legend_outside(fig, [handles[lv] for lv in levels if lv in handles],
                    [_name(lv) for lv in levels if lv in handles], hue)
    fig.suptitle(title + (f" ({held})" if held else ""))
    full = f"{caption} {SPREAD_NOTE}" + (f" Held: {held}." if held else "")
    return Figure(name, title, full, _png(fig))


def _null_formatter():
    from matplotlib import ticker

    return ticker.NullFormatter()


_ORDER = {k: i for i, k in enumerate(("torch", "tf", "fwd", "bwd", "fwdbwd", "static", "per_example"))}
_GATES = {k: i for i, k in enumerate(("topk", "softmax", "dselect_k", "hard_concrete"))}


def _order_key(value: object) -> tuple:
    return (_ORDER.get(str(value), len(_ORDER)), str(value))


def _gate_key(value: object) -> tuple:
    return (_GATES.get(str(value).split("/")[0], len(_GATES)), str(value))


def time_vs(frame: pd.DataFrame, x: str) -> Figure | None:
    """Median time against ``x`` (``experts`` or ``batch``), log-log, a line per gate and framework with its IQR
    band, a panel per mode that has two or more values of ``x``."""
    data = _timing(frame)
    if data.empty or data[x].nunique(dropna=True) < 2:
        return None
    data, held = _hold_others(data[data[x].notna()], (x,))
    data = data.astype({x: float})
    modes = [m for m in sorted(data["mode"].unique(), key=_order_key) if data.loc[data["mode"] == m, x].nunique() > 1]
    if not modes:
        return None
    plt, sns = _setup()
    lines = sorted({(v, f) for v, f in zip(data["variant"], data["framework"], strict=True)},
                   key=lambda t: (_gate_key(t[0]), _order_key(t[1])))
    colors = dict(zip(sorted({v for v, _ in lines}, key=_gate_key), sns.color_palette("colorblind", 10), strict=False))
    fig, axes = _panel_grid(plt, [0], modes, width=4.2, height=3.3)
    handles = {}
    for j, mode in enumerate(modes):
        ax = axes[0][j]
        for variant, fw in lines:
            part = data[(data["mode"] == mode) & (data["variant"] == variant) & (data["framework"] == fw)]
            part = part.sort_values(x)
            if part[x].nunique() < 2:  # a gate timed at one size only draws no line
                continue
            style = "-" if fw == "torch" else "--"
            (h,) = ax.plot(part[x], part["median_ms"], style, marker="o", color=colors[variant], ms=4)
            ax.fill_between(part[x], part["q25_ms"], part["q75_ms"], color=colors[variant], alpha=0.2, lw=0)
            handles[f"{variant}, {_name(fw)}"] = h
        ax.set(xscale="log", yscale="log", title=_name(mode), ylabel=TIME_LABEL if j == 0 else "",
               xlabel="number of experts (log scale)" if x == "experts" else "batch size (log scale)")
        log_ticks(ax, "y")
        ax.set_xticks(sorted(data[x].unique()), [f"{v:g}" for v in sorted(data[x].unique())])
        ax.xaxis.set_minor_formatter(_null_formatter())
    _legend_outside(fig, list(handles.values()), list(handles), "gate, framework")
    what = "the number of experts" if x == "experts" else "the batch size"
    fig.suptitle(f"Cost against {what}" + (f" ({held})" if held else ""))
    caption = (f"Median time per call against {what}; solid: PyTorch, dashed: TensorFlow; bands: the "
               f"interquartile range of the raw samples." + (f" Held: {held}." if held else ""))
    return Figure(f"time_vs_{x}", f"Cost against {what}", caption, _png(fig))


def forward_backward(frame: pd.DataFrame) -> Figure | None:
    data = _timing(frame)
    if data.empty or data["mode"].nunique() < 2:
        return None
    data, held = _hold_others(data, ("gating",))
    return _interval_panels(data, held, hue="mode", col="framework", name="forward_backward",
                            title="Forward vs backward",
                            caption="Time per call of each mode per gate, a panel per framework and gating.")


def torch_vs_tf(frame: pd.DataFrame) -> Figure | None:
    data = _timing(frame)
    if data.empty or data["framework"].nunique() < 2:
        return None
    data, held = _hold_others(data, ("gating",))
    return _interval_panels(data, held, hue="framework", col="mode", name="torch_vs_tf",
                            title="PyTorch vs TensorFlow",
                            caption="The same gate in each framework, a panel per mode and gating.")


def _recovery(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["kind"] == "recovery") & (frame["status"] == "ok")].copy()


def recovery_f1(frame: pd.DataFrame) -> Figure | None:
    data = _recovery(frame)
    if data.empty or data["f1"].notna().sum() == 0:
        return None
    data = data[data["f1"].notna()].astype({"f1": float})
    data["gate"] = data["gate"].astype(str)
    data["framework"] = data["framework"].astype(str).map(lambda f: FRAMEWORK_NAMES.get(f, f))
    order = sorted(data["gate"].unique(), key=_gate_key)
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    many = data["framework"].nunique() > 1
    kw = dict(data=data, x="gate", y="f1", hue="framework", order=order, ax=ax, palette="colorblind")
    sns.stripplot(dodge=many, alpha=0.45, jitter=0.15, legend=False, **kw)
    sns.pointplot(dodge=0.4 if many else False, linestyle="none", errorbar=("ci", 95), markers="D", capsize=0.1,
                  **kw)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("gate")
    ax.set_ylabel("F1 of the selected experts\n(1 = exactly the planted ones)")
    ax.set_title("How well each gate finds the planted experts")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="framework")
    return Figure(
        "recovery_f1",
        "Recovery F1",
        "Support-recovery F1 per gate: small points are seeds; diamonds the mean with a 95% interval.",
        _png(fig),
    )


def prediction_accuracy(frame: pd.DataFrame) -> Figure | None:
    """Test accuracy (averaged over tasks) per gate on the digits benchmark: every held-out seed as a point, the
    mean with a 95% interval, hue = framework; a panel per gating."""
    if "split" not in frame or "acc_mean" not in frame:
        return None
    data = frame[(frame["kind"] == "prediction") & (frame["status"] == "ok") & (frame["split"] == "test")]
    data = data[data["acc_mean"].notna()].astype({"acc_mean": float})
    if data.empty:
        return None
    data = data.assign(gate=data["gate"].astype(str), gating=data["gating"].astype(str),
                       framework=data["framework"].astype(str).map(lambda f: FRAMEWORK_NAMES.get(f, f)))
    order = sorted(data["gate"].unique(), key=_gate_key)
    gatings = sorted(data["gating"].unique())
    plt, sns = _setup()
    fig, axes = plt.subplots(1, len(gatings), figsize=(7.0 * len(gatings), 3.6), squeeze=False)
    many = data["framework"].nunique() > 1
    for ax, gating in zip(axes[0], gatings, strict=True):
        kw = dict(data=data[data["gating"] == gating], x="gate", y="acc_mean", hue="framework", order=order, ax=ax,
                  palette="colorblind")
        sns.stripplot(dodge=many, alpha=0.45, jitter=0.15, legend=False, **kw)
        sns.pointplot(dodge=0.4 if many else False, linestyle="none", errorbar=("ci", 95), markers="D",
                      capsize=0.1, **kw)
        ax.set_xlabel("gate")
        ax.set_ylabel("test accuracy\n(mean over tasks)")
        ax.set_title(f"Prediction on the digits benchmark ({GATING_NAMES.get(gating, gating)} gating)")
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="framework")
    return Figure("prediction_accuracy", "Prediction test accuracy",
                  "Test accuracy per gate (averaged over tasks): small points are held-out seeds; diamonds the mean "
                  "with a 95% interval.", _png(fig))


# List-valued columns read as a per-checkpoint trace of support changes (steps from ``eval_steps``).
TRACE_COLUMNS: tuple[str, ...] = ("support_changes_trace", "support_stability")
TRACE_LABELS = {"support_changes_trace": "support changes since the last checkpoint",
                "support_stability": "support stability"}


def _trace_column(data: pd.DataFrame) -> str | None:
    for col in TRACE_COLUMNS:
        if col in data and data[col].map(lambda v: isinstance(v, (list, tuple))).any():
            return col
    return None


def _trace_long(data: pd.DataFrame, trace: str) -> pd.DataFrame:
    long_rows = []
    for _, row in data.iterrows():
        values = row[trace]
        if not isinstance(values, (list, tuple)):
            continue
        steps = row.get("eval_steps")
        if not isinstance(steps, (list, tuple)) or len(steps) != len(values):
            steps = list(range(1, len(values) + 1))
        fw = FRAMEWORK_NAMES.get(str(row["framework"]), str(row["framework"]))
        for step, v in zip(steps, values, strict=True):
            long_rows.append({"gate": str(row["gate"]), "framework": fw, "step": float(step), "value": float(v)})
    return pd.DataFrame(long_rows)


def support_stability(frame: pd.DataFrame) -> Figure | None:
    """Support stability: a curve per gate over training when the rows carry a per-checkpoint trace
    (``TRACE_COLUMNS``, steps in ``eval_steps``), else ``support_changes`` per seed (how often a row's selected
    set changed over the last half of training; 0 = settled, harness/recovery/metrics.py)."""
    data = _recovery(frame)
    if data.empty:
        return None
    trace = _trace_column(data)
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    if trace is not None:
        sns.lineplot(data=_trace_long(data, trace), x="step", y="value", hue="gate", style="framework",
                     errorbar=("ci", 95), ax=ax, palette="colorblind")
        ax.set_xlabel("training step")
        ax.set_ylabel(TRACE_LABELS.get(trace, trace.replace("_", " ")))
        caption = f"{TRACE_LABELS.get(trace, trace)} at each checkpoint, mean over seeds with a 95% band."
    elif "support_changes" in data and data["support_changes"].notna().any():
        data = data[data["support_changes"].notna()].astype({"support_changes": float})
        data["gate"] = data["gate"].astype(str)
        data["framework"] = data["framework"].astype(str).map(lambda f: FRAMEWORK_NAMES.get(f, f))
        sns.stripplot(data=data, x="gate", y="support_changes", hue="framework",
                      order=sorted(data["gate"].unique(), key=_gate_key), dodge=data["framework"].nunique() > 1,
                      jitter=0.15, ax=ax, palette="colorblind")
        ax.set_ylabel("support changes, last half\n(0 = settled)")
        caption = (
            "Support changes per seed: how many times a row's selected experts changed over the last half "
            "of training (0 = the support has settled)."
        )
    else:
        plt.close(fig)
        return None
    ax.set_title("Support stability over training")
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
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
