"""The hostile-input benchmark runs on tiny limits and writes one row per input kind.

No timing is asserted; what is checked is that every worst input is accepted at the limits
it was built for and the 2,000-scan JPEG is refused.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.hostile_bench import main


def test_quick_run_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "hostile.md"
    assert main(["--quick", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 12  # header + every input kind
    assert sum(row.endswith("| accepted |") for row in rows) == 10
    assert "| refused (413) |" in rows[-2]
