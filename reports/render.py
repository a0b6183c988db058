"""Write a report directory: a self-contained ``index.html``, ``summary.md`` and ``results.csv``.

``assemble_report`` computes what the report shows (``ReportData``); ``html_text``, ``markdown_text`` and
``write_csv`` format it; ``build_report`` does all three into a directory.

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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .load import Loaded, load_results, provenance_summary
from .plots import Figure, make_figures
from .tables import (
    DEFAULT_BASELINE,
    SHAPE_KEYS,
    format_recovery,
    format_timing,
    memory_table,
    recovery_metrics,
    recovery_table,
    timing_table,
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f3f3f3}
td.mark-slower{background:#fde0dd}td.mark-faster{background:#e0f3db}td.mark-baseline{color:#777}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
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
        sections.append((_shape_title(keys, names), group.drop(columns=names)))
    return sections


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
    memory: pd.DataFrame  # MiB, formatted, one column per framework
    recovery: pd.DataFrame  # reports.tables.recovery_table, full precision
    recovery_shown: pd.DataFrame
    figures: list[Figure]
    skipped: list[str]  # figures not drawn, and why
    provenance: list[dict]


def assemble_report(
    loaded: Loaded, *, baseline: str = DEFAULT_BASELINE, sources: Iterable[str] = (), title: str = "gatebench report"
) -> ReportData:
    """The report's tables, figures and provenance for the loaded rows."""
    frame = loaded.frame
    timing = timing_table(frame, baseline=baseline)
    memory = memory_table(frame)
    recovery = recovery_table(frame, baseline=baseline)
    figures, skipped = make_figures(frame)
    counts = pd.DataFrame()
    if len(frame):
        counts = frame.groupby(["kind", "status"], dropna=False).size().reset_index(name="rows")
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
        memory=memory.map(lambda v: f"{v:.3g}" if pd.notna(v) else "").reset_index() if not memory.empty else memory,
        recovery=recovery,
        recovery_shown=format_recovery(recovery, recovery_metrics(frame)),
        figures=figures,
        skipped=list(skipped),
        provenance=provenance_summary(frame),
    )


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
        _table_html(data.counts),
    ]
    if data.problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in data.problems)
        parts.append(f"<h2>Problems while loading</h2><ul class='problems'>{items}</ul>")
    base = html.escape(data.baseline)
    parts.append(
        f"<h2>Timing: ratio to the baseline ({base} in the same framework)</h2>"
        "<p>Cases timed in the same interleaved rounds (method: order statistics of per-round ratios): ratio = "
        "median of the per-round ratios, 95% interval across rounds, marked when the interval excludes 1. Rows "
        "without rounds (method: bootstrap over samples): ratio = median(case) / median(baseline), 95% bootstrap "
        "interval, mark by the two-sided Mann-Whitney U test on the raw samples, p &lt; 0.05. IQR is a "
        "percentage of the median; a comparison with a noisy or inconsistent side (flags) is not judged.</p>"
    )
    if not data.timing_sections:
        parts.append("<p><em>no timing rows</em></p>")
    for name, table in data.timing_sections:
        parts.append(f"<h3>{html.escape(name)}</h3>" + _table_html(table, mark_col="mark"))
    parts.append("<h2>Peak memory (MiB)</h2>" + _table_html(data.memory))
    parts.append(
        "<h2>Recovery (mean ± s.e. over seeds; median paired difference and Wilcoxon signed-rank p against "
        f"{base})</h2>" + _table_html(data.recovery_shown)
    )
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(fig) for fig in data.figures]
    if data.skipped:
        parts.append("<p>Not drawn: " + "; ".join(html.escape(s) for s in data.skipped) + ".</p>")
    parts.append("<h2>Provenance</h2>" + _provenance_html(data.provenance))
    parts.append("</body></html>")
    return "\n".join(parts)


def markdown_text(data: ReportData) -> str:
    """``summary.md``: the same tables in Markdown."""
    sources = ", ".join(data.sources)
    md = [f"# {data.title}", "", f"Generated {data.generated} from {len(data.frame)} rows: {sources}", ""]
    if data.problems:
        md += ["## Problems while loading", ""] + [f"- {p}" for p in data.problems] + [""]
    md += [f"## Timing: ratio to {data.baseline} (same framework, shape and mode)", ""]
    for name, table in data.timing_sections:
        md += [f"### {name}", "", _md_table(table)]
    if not data.memory.empty:
        md += ["## Peak memory (MiB)", "", _md_table(data.memory)]
    if not data.recovery_shown.empty:
        md += [
            f"## Recovery (mean ± s.e.; median paired difference, Wilcoxon signed-rank p vs {data.baseline})",
            "",
            _md_table(data.recovery_shown),
        ]
    md += ["## Figures", ""] + [f"- {f.title}: {f.caption}" for f in data.figures] + [""]
    md += ["## Provenance", ""] + [f"- {json.dumps(r, default=str)}" for r in data.provenance] + [""]
    return "\n".join(md)


def write_csv(data: ReportData, out: Path) -> Path:
    """``results.csv`` (the loaded frame, lists and dicts as JSON), ``timing_table.csv`` and, with recovery rows,
    ``recovery_table.csv`` (full precision); returns the path of ``results.csv``."""
    csv = out / "results.csv"
    flat = data.frame.copy()
    for col in flat.columns:
        if flat[col].dtype == object:
            flat[col] = flat[col].map(lambda v: json.dumps(v, default=str) if isinstance(v, (list, dict)) else v)
    flat.to_csv(csv, index=False)
    data.timing.to_csv(out / "timing_table.csv", index=False)
    if not data.recovery.empty:
        data.recovery.to_csv(out / "recovery_table.csv", index=False)
    return csv


def build_report(
    loaded: Loaded,
    out_dir: str | os.PathLike[str],
    *,
    baseline: str = DEFAULT_BASELINE,
    sources: Iterable[str] = (),
    title: str = "gatebench report",
) -> ReportPaths:
    """Write ``index.html``, ``summary.md`` and the CSV files for the loaded rows into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = assemble_report(loaded, baseline=baseline, sources=sources, title=title)
    index, summary = out / "index.html", out / "summary.md"
    index.write_text(html_text(data), encoding="utf-8")
    summary.write_text(markdown_text(data), encoding="utf-8")
    csv = write_csv(data, out)
    return ReportPaths(out, index, summary, csv, len(data.figures), list(data.problems))


def _figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (
        f"<figure id='fig-{fig.name}'><img alt='{html.escape(fig.name)}' src='data:image/png;base64,{data}'>"
        f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}</figcaption></figure>"
    )


def write_report(
    paths: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    baseline: str = DEFAULT_BASELINE,
) -> ReportPaths:
    """Load ``paths`` (results files or directories) and write the report into ``out_dir``."""
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("paths: expected at least one results file or directory; got none")
    loaded = load_results(paths)
    if loaded.frame.empty:
        detail = "; ".join(loaded.problems[:5])
        raise ValueError(
            f"paths: expected results files with timing or recovery rows; loaded none from "
            f"{', '.join(paths)}" + (f" ({detail})" if detail else "")
        )
    return build_report(loaded, out_dir, baseline=baseline, sources=paths)
