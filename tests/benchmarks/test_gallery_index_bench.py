"""The embedded gallery benchmark runs end to end on a small gallery and reports every row."""

from __future__ import annotations

from pathlib import Path

from benchmarks import gallery_index_bench


def test_quick_run_writes_a_report_with_every_search_row(tmp_path: Path) -> None:
    out = tmp_path / "gallery.md"
    assert gallery_index_bench.main(["--quick", "--out", str(out)]) == 0
    report = out.read_text()
    search_rows = [
        line
        for line in report.splitlines()
        if line.startswith("| ") and ("IVF" in line or "exact" in line)
    ]
    assert len(search_rows) == 1 + len(gallery_index_bench.LABELS), report
