"""The hostile-input benchmark runs on tiny limits and writes one row per input kind.

No timing is asserted; what is checked is that every worst input is accepted at the limits
it was built for (the files at each structure budget too), and the structure floods and the
2,000-scan JPEG are refused.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.hostile_bench import main
from benchmarks.hostile_inputs import structure_floods


def test_quick_run_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "hostile.md"
    assert main(["--quick", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    floods = len(structure_floods(200_000))
    assert len(rows) == 1 + 10 + 9 + floods + 3  # header + every input kind
    assert sum(row.endswith("| accepted |") for row in rows) == 10 + 9
    assert sum(row.endswith("| refused (413) |") for row in rows) == floods + 2
    assert "| refused (413) |" in rows[-2]
