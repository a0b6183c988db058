"""The report's ``index.html`` in headless Chromium: every figure loads, the console stays silent; the
screenshot is kept (its path is printed; run ``pytest -s`` to see it).

Chromium is Debian's package: the session fixture installs it with ``scripts/install_chromium.sh`` when it is
missing and the tests run as root; otherwise the tests skip, saying why.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reports.browser import check_report, find_chromium
from reports.browser import main as browser_main
from reports.render import build_report, write_report
from tests.fixtures.synthetic import write_fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path:
        return path
    if os.geteuid() != 0:
        pytest.skip(
            "chromium is missing and installing it needs root: run scripts/install_chromium.sh as root"
        )
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_chromium.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    path = find_chromium()
    if run.returncode != 0 or not path:
        pytest.skip(f"could not install chromium (exit {run.returncode}): {run.stderr[-500:]}")
    return path


def test_fixture_report_renders_with_every_figure(chromium, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser-report")
    report = write_report([write_fixture(out / "fixture.jsonl")], out / "report")
    assert report.figures == 7  # the six figures and the headline's cost figure
    shot = out / "report.png"
    check = check_report(report.index_html, shot, chromium=chromium)
    print(f"\nreport: {report.index_html}\nscreenshot: {shot}")
    assert check.figures_ok == 7 and check.figures_bad == 0, check
    assert check.page_errors == 0 and check.console == [], check
    assert check.title == "gatebench report: 7 figures ok" and check.ok
    assert shot.stat().st_size > 20_000  # a real picture, not a blank page


def test_a_broken_figure_is_caught(chromium, tmp_path):
    """The check can fail: a figure whose PNG is corrupt is reported by name, and so is a console error."""
    from reports.load import load_results

    loaded = load_results([write_fixture(tmp_path / "fixture.jsonl")])
    report = build_report(loaded, tmp_path / "report")
    html = report.index_html.read_text()
    start = html.index("data:image/png;base64,", html.index("id='fig-torch_vs_tf'"))
    html = html[:start] + "data:image/png;base64,AAAA" + html[start + len("data:image/png;base64,") + 40 :]
    html = html.replace("</body>", "<script>console.error('synthetic failure')</script></body>")
    report.index_html.write_text(html)
    check = check_report(report.index_html, chromium=chromium)
    assert check.figures_bad == 1 and "torch_vs_tf" in check.title and not check.ok
    assert check.page_errors >= 2  # the failed image load and the console.error
    assert any("synthetic failure" in line for line in check.console)
    assert browser_main([str(report.index_html)]) == 1  # the command-line form fails too
    assert browser_main([str(tmp_path / "absent.html")]) == 2
