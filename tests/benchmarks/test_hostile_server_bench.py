"""The hostile-server benchmark's ``--quick`` run: a few corpus requests and a 2 s flood
against a real 2-worker ``python -m app``, about half a minute.

No cost or latency is asserted (the machine is shared, and whether the server meets the
goals is tests/app/test_input_gate.py's question); what is checked is that the report has
a row per request with its status and cost, and the flood's friendly and probe figures.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.hostile_requests import quick_corpus
from benchmarks.hostile_server_bench import main

pytestmark = pytest.mark.slow


def test_quick_run_reports_every_request_and_the_flood(quick_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "hostile_server.md"
    assert main(["--models", str(quick_models), "--quick", "--out", str(out)]) == 0
    report = out.read_text()
    names = [request.name for request in quick_corpus()]
    rows = [line for line in report.splitlines() if line.startswith("| ") and "|" in line[2:]]
    for name in names:
        (row,) = [line for line in rows if line.startswith(f"| {name} |")]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert re.fullmatch(r"\d{3}(, \d{3})*", cells[2]), row  # every copy answered
        float(cells[4]), float(cells[5])  # CPU s, RSS growth MiB
    (flood,) = [line for line in rows if line.startswith("| flood |")]
    cells = [cell.strip() for cell in flood.strip("|").split("|")]
    assert int(cells[1]) > 0 and int(cells[5]) > 0  # friendly requests, /healthz probes
    assert re.search(r"Hostile requests sent during the flood: [1-9]\d*", report)
    assert "Worker pids: [" in report and '"python":' in report
