"""Which files of a report folder may be listed and served."""

from __future__ import annotations

from pathlib import Path

from app.core.reports import find_report_file, list_report


def test_only_plain_png_and_json_files_with_safe_names_are_listed(tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    for name in ("b.png", "a.json", "notes.txt", ".hidden.png", "page.html", "x y.png"):
        (report / name).write_bytes(b"1234")
    (report / "tensorboard").mkdir()
    (report / "tensorboard" / "inner.png").write_bytes(b"1")
    (report / "link.png").symlink_to(report / "b.png")
    listed = list_report(tmp_path)
    assert [(f.name, f.content_type, f.size) for f in listed] == [
        ("a.json", "application/json", 4),
        ("b.png", "image/png", 4),
    ]
    assert find_report_file(tmp_path, "b.png") == listed[1]
    for name in ("link.png", "../report/b.png", "tensorboard/inner.png", "notes.txt"):
        assert find_report_file(tmp_path, name) is None


def test_a_version_without_a_report_lists_nothing(tmp_path: Path) -> None:
    assert list_report(tmp_path) == []
