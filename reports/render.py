"""Write a report directory: a self-contained ``index.html``, ``summary.md`` and ``results.csv``.

``assemble_report`` computes what the report shows (``ReportData``); ``html_text``, ``markdown_text`` and
``write_csv`` format it; ``build_report`` does all three into a directory.

The page opens with the headline (``<section id="headline">``, ``reports.headline``): per framework and device
what each gate costs against the baseline, how well it finds the planted experts and (digits benchmark rows)
how well it predicts, one figure per question,
and the caveats the rows call for; ``summary.md`` starts with the same sentences. With a history (asv results or
gatebench results of several commits, ``reports.history``) a section draws each benchmark against commit.

``index.html`` embeds every figure as a base64 PNG and has no external resource. A small inline script checks,
once the page has loaded, that every ``<img>`` decoded (``naturalWidth > 0``) and sets ``document.title`` to
``"gatebench report: N figures ok"`` or ``"gatebench report: FIGURE ERROR ..."``, and counts the page's errors
(uncaught exceptions, failed loads, ``console.error``) in ``<body data-errors>``; the browser test reads both.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .headline import Headline, build_headline
from .history import history_figure, load_history, spans_commits
from .load import Loaded, load_results, provenance_summary
from .plots import Figure, make_figures, prediction_accuracy
from .tables import (
    DEFAULT_BASELINE,
    MEM_UNIT,
    SHAPE_KEYS,
    duplicate_cases,
    format_prediction,
    format_recovery,
    format_recovery_compact,
    format_timing,
    memory_table,
    prediction_table,
    recovery_metrics,
    recovery_table,
    timing_table,
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1300px;
padding:0 1em;color:#222;line-height:1.4}
#headline{background:#f7f9fc;border:1px solid #d8e0ec;border-radius:6px;padding:.6em 1.2em 1em;margin:1em 0}
#headline h2{margin-top:.6em}#headline li{margin:.3em 0}.caveats li{color:#8a4b00}
details{margin:.5em 0 1em}summary{cursor:pointer;color:#245}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}th{background:#f3f3f3}
td.mark-slower{background:#fde0dd}td.mark-faster{background:#e0f3db}td.mark-baseline{color:#777}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.problems{color:#a33;font-size:.85em}code{font-size:.9em}.scroll{overflow-x:auto}
"""

_SCRIPT = """
var gatebenchErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  gatebenchErrors.push(e.message || ('failed to load ' + (t && (t.alt || t.src || t.tagName))));
}, true);
(function () {
  var original = console.error;
  console.error = function () {
    gatebenchErrors.push(Array.prototype.join.call(arguments, ' '));
    original.apply(console, arguments);
  };
})();
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  var names = bad.map(function (im) { return im.alt; }).join(',');
  document.title = bad.length ? 'gatebench report: FIGURE ERROR ' + names
                              : 'gatebench report: ' + imgs.length + ' figures ok';
  document.body.setAttribute('data-figures-ok', String(imgs.length - bad.length));
  document.body.setAttribute('data-figures-bad', String(bad.length));
  document.body.setAttribute('data-errors', String(gatebenchErrors.length));
});
"""


@dataclass
class ReportPaths:
    directory: Path
    index_html: Path
    summary_md: Path
    results_csv: Path
    figures: int
    problems: list[str]


def _table_html(frame: pd.DataFrame, mark_col: str | None = None) -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for col in frame.columns:
            value = row[col]
            text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
            cls = f' class="mark-{text.split()[0]}"' if col == mark_col and text else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f"<div class='scroll'>{table}</div>"


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_\n"
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = [
            "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v).replace("|", "\\|")
            for v in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _shape_title(keys: tuple, names: list[str]) -> str:
    return ", ".join(f"{n}={v}" for n, v in zip(names, keys, strict=True) if v != "-")


def _timing_sections(shown: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The formatted timing table split per shape and mode."""
    if shown.empty:
        return []
    names = [*SHAPE_KEYS, "mode"]
    sections = []
    for keys, group in shown.groupby(names, sort=True, dropna=False):
        title, table = _lift_constant(_shape_title(keys, names), group.drop(columns=names))
        sections.append((title, table))
    return sections


# Timing columns that, when one value holds for a whole section, go into its heading (a narrower table).
_LIFTED = ("baseline", "method", "rounds", "p", "flags")


def _lift_constant(title: str, table: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    said = []
    for col in _LIFTED:
        if col not in table:
            continue
        values = set(table[col].astype(str))
        if col in ("method", "p"):  # blank on the baseline's own row
            values.discard("")
            values = values or {""}
        if len(values) == 1:
            value = values.pop()
            if value:
                said.append(f"{col}: {value}")
            table = table.drop(columns=col)
    return (title + (" (" + "; ".join(said) + ")" if said else "")), table


def _provenance_html(records: list[dict]) -> str:
    if not records:
        return "<p><em>no provenance recorded</em></p>"
    keys = sorted({k for r in records for k in r})
    frame = pd.DataFrame(
        [
            {k: (json.dumps(r[k]) if isinstance(r.get(k), (dict, list)) else r.get(k)) for k in keys}
            for r in records
        ]
    )
    return _table_html(frame)


@dataclass
class ReportData:
    """Everything a report shows, assembled once from the loaded rows; the writers only format it."""

    title: str
    generated: str
    sources: list[str]
    baseline: str
    frame: pd.DataFrame
    problems: list[str]
    counts: pd.DataFrame  # rows per kind and status
    timing: pd.DataFrame  # reports.tables.timing_table, full precision
    timing_sections: list[tuple[str, pd.DataFrame]]  # the formatted timing table per shape and mode
    memory: pd.DataFrame  # KiB (MEM_UNIT), formatted, one column per framework
    recovery: pd.DataFrame  # reports.tables.recovery_table, full precision
    recovery_shown: pd.DataFrame  # every metric
    figures: list[Figure]
    skipped: list[str]  # figures not drawn, and why
    provenance: list[dict]
    headline: Headline = field(default_factory=Headline)
    recovery_compact: pd.DataFrame = field(default_factory=pd.DataFrame)  # the main metrics, one cell each
    warnings: list[str] = field(default_factory=list)  # duplicate case ids
    history: Figure | None = None
    prediction: pd.DataFrame = field(default_factory=pd.DataFrame)  # reports.tables.prediction_table
    prediction_shown: pd.DataFrame = field(default_factory=pd.DataFrame)  # formatted


def _memory_shown(memory: pd.DataFrame) -> pd.DataFrame:
    return memory.map(lambda v: f"{v:.3g}" if pd.notna(v) else "").reset_index() if not memory.empty else memory


def assemble_report(
    loaded: Loaded,
    *,
    baseline: str = DEFAULT_BASELINE,
    sources: Iterable[str] = (),
    title: str = "gatebench report",
    history: pd.DataFrame | None = None,
) -> ReportData:
    """The report's headline, tables, figures and provenance for the loaded rows. ``history``: a
    ``reports.history.load_history`` frame; without it, the loaded rows are the history when they span several
    commits."""
    frame = loaded.frame
    timing = timing_table(frame, baseline=baseline)
    recovery = recovery_table(frame, baseline=baseline)
    metrics = recovery_metrics(frame)
    figures, skipped = make_figures(frame)
    recovery_fig = next((f for f in figures if f.name == "recovery_f1"), None)
    prediction = prediction_table(frame, baseline=baseline)
    counts = pd.DataFrame()
    if len(frame):
        counts = frame.groupby(["kind", "status"], dropna=False).size().reset_index(name="rows")
    if history is None and spans_commits(frame):
        history = load_history(sorted({str(s) for s in frame["source"].dropna()}))
    return ReportData(
        title=title,
        generated=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        sources=list(sources),
        baseline=baseline,
        frame=frame,
        problems=list(loaded.problems),
        counts=counts,
        timing=timing,
        timing_sections=_timing_sections(format_timing(timing)),
        memory=_memory_shown(memory_table(frame)),
        recovery=recovery,
        recovery_shown=format_recovery(recovery, metrics),
        figures=[f for f in figures if f is not recovery_fig],
        skipped=list(skipped),
        provenance=provenance_summary(frame),
        headline=build_headline(frame, timing, recovery, baseline, recovery_fig, prediction,
                                prediction_accuracy(frame) if not prediction.empty else None),
        recovery_compact=format_recovery_compact(recovery, metrics),
        warnings=duplicate_cases(frame),
        history=history_figure(history) if history is not None else None,
        prediction=prediction,
        prediction_shown=format_prediction(prediction, baseline),
    )


def _headline_html(data: ReportData) -> str:
    head = data.headline
    parts = ["<section id='headline'><h2>Headline</h2>"]
    if head.cost:
        parts.append(f"<h3>What each gate costs against {html.escape(data.baseline)}</h3><ul>"
                     + "".join(f"<li>{html.escape(s)}</li>" for s in head.cost) + "</ul>")
        parts += [_figure_html(f) for f in head.figures if f.name == "headline_cost"]
    if head.recovery:
        parts.append("<h3>How well each gate finds the planted experts</h3><ul>"
                     + "".join(f"<li>{html.escape(s)}</li>" for s in head.recovery) + "</ul>")
        parts += [_figure_html(f) for f in head.figures if f.name == "recovery_f1"]
    if head.prediction:
        parts.append("<h3>How well each gate predicts (digits benchmark, test split)</h3><ul>"
                     + "".join(f"<li>{html.escape(s)}</li>" for s in head.prediction) + "</ul>")
        parts += [_figure_html(f) for f in head.figures if f.name == "prediction_accuracy"]
    if not head.sentences:
        parts.append("<p><em>no ok timing, recovery or prediction rows to compare</em></p>")
    if head.caveats:
        parts.append("<h3>Caveats</h3><ul class='caveats'>"
                     + "".join(f"<li>{html.escape(c)}</li>" for c in head.caveats) + "</ul>")
    parts.append("</section>")
    return "".join(parts)


def html_text(data: ReportData) -> str:
    """The self-contained ``index.html`` (see the module docstring)."""
    title = html.escape(data.title)
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>",
        f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>{title}</h1>",
        f"<p>Generated {data.generated} from {len(data.frame)} rows of {len(data.sources)} input(s): "
        + ", ".join(f"<code>{html.escape(s)}</code>" for s in data.sources)
        + ".</p>",
        _headline_html(data),
        "<h2>Rows loaded</h2>" + _table_html(data.counts),
    ]
    for heading, items in (("Problems while loading", data.problems), ("Warnings", data.warnings)):
        if items:
            lis = "".join(f"<li>{html.escape(p)}</li>" for p in items)
            parts.append(f"<h2>{heading}</h2><ul class='problems'>{lis}</ul>")
    parts += _timing_html(data)
    parts.append(f"<h2>Peak memory ({MEM_UNIT})</h2>" + _table_html(data.memory))
    parts += _recovery_html(data)
    parts += _prediction_html(data)
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(fig) for fig in data.figures]
    if data.skipped:
        parts.append("<p>Not drawn: " + "; ".join(html.escape(s) for s in data.skipped) + ".</p>")
    if data.history is not None:
        parts.append("<h2 id='history'>Regression history</h2>" + _figure_html(data.history))
    parts.append("<h2>Provenance</h2>" + _provenance_html(data.provenance))
    parts.append("</body></html>")
    return "\n".join(parts)


def _timing_html(data: ReportData) -> list[str]:
    base = html.escape(data.baseline)
    parts = [
        f"<h2>Timing: ratio to the baseline ({base} in the same framework and run)</h2>"
        "<p>Cases timed in the same interleaved rounds (method: order statistics of per-round ratios): ratio = "
        "median of the per-round ratios, 95% interval across rounds, marked when the interval excludes 1. Rows "
        "without rounds (method: bootstrap over samples): ratio = median(case) / median(baseline), 95% bootstrap "
        "interval, mark by the two-sided Mann-Whitney U test on the raw samples, p &lt; 0.05. median_ms: "
        "milliseconds per call; IQR: the interquartile range as a percentage of the median; n: samples; a "
        f"comparison with a noisy or inconsistent side (flags) is not judged. Memory in {MEM_UNIT}.</p>"
    ]
    if not data.timing_sections:
        parts.append("<p><em>no timing rows</em></p>")
    for name, table in data.timing_sections:
        parts.append(f"<h3>{html.escape(name)}</h3>" + _table_html(table, mark_col="mark"))
    return parts


def _recovery_html(data: ReportData) -> list[str]:
    base = html.escape(data.baseline)
    if data.recovery_shown.empty:
        return ["<h2>Recovery</h2><p><em>no recovery rows</em></p>"]
    return [
        f"<h2>Recovery (mean ± s.e. over seeds; median paired difference and Wilcoxon signed-rank p against "
        f"{base})</h2>" + _table_html(data.recovery_compact),
        "<details><summary>Every recovery metric</summary>" + _table_html(data.recovery_shown) + "</details>",
    ]


def _prediction_html(data: ReportData) -> list[str]:
    if data.prediction_shown.empty:
        return []
    return [f"<h2>Prediction (digits benchmark, test split: mean ± s.e. over held-out seeds; median paired "
            f"difference, Wilcoxon signed-rank p and Holm p against {html.escape(data.baseline)})</h2>"
            + _table_html(data.prediction_shown)]


def markdown_text(data: ReportData) -> str:
    """``summary.md``: the headline's sentences and caveats first, then the same tables in Markdown."""
    sources = ", ".join(data.sources)
    md = [f"# {data.title}", ""] + [f"- {s}" for s in data.headline.sentences]
    if data.headline.caveats:
        md += ["", "Caveats:", ""] + [f"- {c}" for c in data.headline.caveats]
    md += ["", f"Generated {data.generated} from {len(data.frame)} rows: {sources}", ""]
    for heading, items in (("Problems while loading", data.problems), ("Warnings", data.warnings)):
        if items:
            md += [f"## {heading}", ""] + [f"- {p}" for p in items] + [""]
    md += [f"## Timing: ratio to {data.baseline} (same framework, shape, mode and run)", ""]
    for name, table in data.timing_sections:
        md += [f"### {name}", "", _md_table(table)]
    if not data.memory.empty:
        md += [f"## Peak memory ({MEM_UNIT})", "", _md_table(data.memory)]
    if not data.recovery_shown.empty:
        md += [
            f"## Recovery (mean ± s.e.; median paired difference, Wilcoxon signed-rank p vs {data.baseline})",
            "",
            _md_table(data.recovery_shown),
        ]
    if not data.prediction_shown.empty:
        md += [f"## Prediction (digits benchmark, test split; Wilcoxon signed-rank and Holm vs {data.baseline})", "",
               _md_table(data.prediction_shown)]
    figures = [*data.headline.figures, *data.figures, *([data.history] if data.history else [])]
    md += ["## Figures", ""] + [f"- {f.title}: {f.caption}" for f in figures] + [""]
    md += ["## Provenance", ""] + [f"- {json.dumps(r, default=str)}" for r in data.provenance] + [""]
    return "\n".join(md)


def write_csv(data: ReportData, out: Path) -> Path:
    """``results.csv`` (the loaded frame, lists and dicts as JSON), ``timing_table.csv`` and, with recovery rows,
    ``recovery_table.csv`` and, with prediction rows, ``prediction_table.csv`` (full precision); returns the path
    of ``results.csv``."""
    csv = out / "results.csv"
    flat = data.frame.copy()
    for col in flat.columns:
        if flat[col].dtype == object:
            flat[col] = flat[col].map(lambda v: json.dumps(v, default=str) if isinstance(v, (list, dict)) else v)
    flat.to_csv(csv, index=False)
    data.timing.to_csv(out / "timing_table.csv", index=False)
    if not data.recovery.empty:
        data.recovery.to_csv(out / "recovery_table.csv", index=False)
    if not data.prediction.empty:
        data.prediction.to_csv(out / "prediction_table.csv", index=False)
    return csv


def build_report(
    loaded: Loaded,
    out_dir: str | os.PathLike[str],
    *,
    baseline: str = DEFAULT_BASELINE,
    sources: Iterable[str] = (),
    title: str = "gatebench report",
    history: Iterable[str | os.PathLike[str]] = (),
) -> ReportPaths:
    """Write ``index.html``, ``summary.md`` and the CSV files for the loaded rows into ``out_dir``; ``history``:
    asv results folders or gatebench results files of several commits (``reports.history.load_history``).

    Whole or not at all (``harness.results.write_folder``): the files go into a temporary folder beside
    ``out_dir``, renamed into place at the end; a failed or killed write leaves the previous report as it was,
    and no file of an earlier report survives a later one. A folder that cannot be written is a ValueError."""
    from harness.results import write_folder

    out = Path(out_dir)
    history = list(history)
    frame = load_history(history) if history else None
    data = assemble_report(loaded, baseline=baseline, sources=sources, title=title, history=frame)

    def write(folder: Path) -> None:
        (folder / "index.html").write_text(html_text(data), encoding="utf-8")
        (folder / "summary.md").write_text(markdown_text(data), encoding="utf-8")
        write_csv(data, folder)

    owned = ("index.html", "summary.md", "results.csv", "timing_table.csv", "recovery_table.csv",
             "prediction_table.csv")
    write_folder(out, write, owned, what="report")
    count = len(data.figures) + len(data.headline.figures) + (data.history is not None)
    return ReportPaths(out, out / "index.html", out / "summary.md", out / "results.csv", count, list(data.problems))


def _png_width(png: bytes) -> int:
    """The pixel width of a PNG (its IHDR chunk); 0 when the bytes are not a PNG."""
    return int.from_bytes(png[16:20], "big") if png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) >= 24 else 0


def _figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    width = _png_width(fig.png) * 2 // 3  # drawn at 150 dpi, shown at 100 css px per inch: sharp on any screen
    style = f" style='width:{width}px'" if width else ""
    return (
        f"<figure id='fig-{fig.name}'><img alt='{html.escape(fig.name)}'{style} "
        f"src='data:image/png;base64,{data}'>"
        f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}</figcaption></figure>"
    )


def write_report(
    paths: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    baseline: str = DEFAULT_BASELINE,
    history: Iterable[str | os.PathLike[str]] = (),
) -> ReportPaths:
    """Load ``paths`` (results files or directories) and write the report into ``out_dir`` (``history``: see
    ``build_report``)."""
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("paths: expected at least one results file or directory; got none")
    loaded = load_results(paths)
    if loaded.frame.empty:
        detail = "; ".join(loaded.problems[:5])
        raise ValueError(
            f"paths: expected results files with timing, recovery or prediction rows; loaded none from "
            f"{', '.join(paths)}" + (f" ({detail})" if detail else "")
        )
    return build_report(loaded, out_dir, baseline=baseline, sources=paths, history=history)
