"""A report is written whole or not at all: into a temporary folder beside the target, then renamed into place; a
write that fails midway leaves the previous report intact and no partial file, and no stale file survives."""

from __future__ import annotations

import pytest

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from reports import render  # noqa: E402
from tests.fixtures.synthetic import write_fixture  # noqa: E402


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("atomic")
    return (write_fixture(folder / "both.jsonl", corrupt=False),
            write_fixture(folder / "timing.jsonl", recovery=False, corrupt=False))


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_write_that_fails_midway_leaves_the_old_report_whole(fixtures, tmp_path, monkeypatch):
    both, _ = fixtures
    out = tmp_path / "report"
    render.write_report([both], out)
    before = _snapshot(out)
    assert {"index.html", "summary.md", "results.csv", "recovery_table.csv"} <= set(before)

    def broken(*args, **kwargs):
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(render, "markdown_text", broken)  # index.html is written first, then this raises
    with pytest.raises(RuntimeError, match="killed while writing"):
        render.write_report([both], out)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder left beside it


def test_no_stale_file_survives_a_later_report(fixtures, tmp_path):
    both, timing = fixtures
    out = tmp_path / "report"
    render.write_report([both], out)
    assert (out / "recovery_table.csv").exists()
    paths = render.write_report([timing], out)
    assert not (out / "recovery_table.csv").exists() and paths.index_html.read_text().strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_folder_with_other_files_keeps_them(fixtures, tmp_path):
    both, timing = fixtures
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    render.write_report([both], out)
    render.write_report([timing], out)
    assert (out / "notes.txt").read_text() == "keep me" and not (out / "recovery_table.csv").exists()
    assert (out / "index.html").stat().st_size > 0


def test_an_unwritable_report_folder_is_one_value_error(fixtures, tmp_path):
    both, _ = fixtures
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="out: cannot write the report"):
        render.write_report([both], tmp_path / "file.txt" / "report")
