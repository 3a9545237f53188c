"""The wrk benchmark runs end to end for about a second per scenario on one worker.

No speed is asserted (the machine is shared); what is checked is that every scenario was
served without failures, and that CPU figures for the server and for wrk are reported.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from benchmarks.wrk_bench import main
from tests.conftest import SHARED_DATA


@pytest.mark.skipif(shutil.which("wrk") is None, reason="no wrk: see scripts/install-wrk.sh")
def test_one_second_run_writes_a_row_per_scenario(quick_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "wrk.md"
    arguments = ["--models", str(quick_models), "--data", str(SHARED_DATA), "--workers", "1"]
    assert main([*arguments, "--duration", "1", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| /")]
    assert len(rows) == 5
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        rps, server_ms, wrk_percent, failed = (float(cells[i]) for i in (3, 8, 9, 11))
        assert rps > 0 and server_ms > 0 and wrk_percent > 0 and failed == 0, row
    assert re.search(r"In-process signature at batch 32 \(\w+\): \d+ images/s", out.read_text())
