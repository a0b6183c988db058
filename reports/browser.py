"""Check a report in headless Chromium: every figure decodes, the page logs no console message and no error.

``index.html`` carries an inline script (``reports.render``) that, on load, sets ``document.title`` to
``"gatebench report: N figures ok"`` (or ``"... FIGURE ERROR <names>"``) and writes ``data-figures-ok``,
``data-figures-bad`` and ``data-errors`` on ``<body>``. This module runs Chromium twice on the file: once with
``--dump-dom`` (read those attributes; Chromium's ``--enable-logging=stderr`` prints every console message as
an ``INFO:CONSOLE`` line, which the check also collects), once with ``--screenshot``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """The path of Debian's ``chromium`` (or ``chromium-browser``), or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class BrowserCheck:
    title: str
    figures_ok: int
    figures_bad: int
    page_errors: int
    console: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return (
            self.figures_bad == 0
            and self.page_errors == 0
            and not self.console
            and self.title.endswith("figures ok")
        )


def _attr(dom: str, name: str) -> int:
    match = re.search(rf'{name}="(\d+)"', dom)
    if match is None:
        raise RuntimeError(
            f"the page did not set {name} (its load script did not run); DOM starts {dom[:200]!r}"
        )
    return int(match.group(1))


def check_report(
    index_html: str | os.PathLike[str],
    screenshot: str | os.PathLike[str] | None = None,
    *,
    chromium: str | None = None,
    timeout_s: float = 90.0,
    width: int = 1400,
    height: int = 2400,
) -> BrowserCheck:
    """Load ``index_html`` in headless Chromium and return what it saw (see the module docstring)."""
    index = Path(index_html).resolve()
    if not index.is_file():
        raise ValueError(f"index_html: expected an existing HTML file; got {index_html!r}")
    browser = chromium or find_chromium()
    if browser is None:
        raise RuntimeError(
            "chromium is not installed (scripts/install_chromium.sh installs Debian's package)"
        )
    url = index.as_uri()
    with tempfile.TemporaryDirectory(prefix="gatebench-chromium-") as profile:
        common = [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
        ]
        run = subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if run.returncode != 0:
            raise RuntimeError(f"chromium --dump-dom exited {run.returncode}: {run.stderr[-2000:]}")
        dom = run.stdout
        console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
        title_match = re.search(r"<title>([^<]*)</title>", dom)
        check = BrowserCheck(
            title=title_match.group(1) if title_match else "",
            figures_ok=_attr(dom, "data-figures-ok"),
            figures_bad=_attr(dom, "data-figures-bad"),
            page_errors=_attr(dom, "data-errors"),
            console=console,
        )
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            run = subprocess.run(
                [*common, f"--window-size={width},{height}", f"--screenshot={shot}", url],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            if run.returncode != 0 or not shot.exists():
                raise RuntimeError(f"chromium --screenshot exited {run.returncode}: {run.stderr[-2000:]}")
            check.screenshot = shot
    return check


def main(argv: list[str] | None = None) -> int:
    """``python -m reports.browser INDEX_HTML [--screenshot PNG]``: exit 0 when the page is fine, 1 when not,
    2 when Chromium is missing."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m reports.browser", description=main.__doc__)
    parser.add_argument("index_html")
    parser.add_argument("--screenshot", default=None)
    parser.add_argument("--width", type=int, default=1400, help="window width in pixels (default 1400)")
    parser.add_argument("--height", type=int, default=5000, help="window height in pixels (default 5000)")
    args = parser.parse_args(argv)
    try:
        check = check_report(args.index_html, args.screenshot, width=args.width, height=args.height)
    except (RuntimeError, ValueError) as exc:
        print(f"cannot check {args.index_html}: {exc}")
        return 2
    print(
        f"{check.title}; page errors {check.page_errors}; console lines {len(check.console)}"
        + (f"; screenshot {check.screenshot}" if check.screenshot else "")
    )
    for line in check.console:
        print(f"  console: {line}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
