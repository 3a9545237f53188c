"""The benchmark runs end to end on tiny settings and writes its table and JSON.

No timing is asserted (numbers on a shared CI machine mean nothing); what is checked is
that every section was measured, with no failed request, from real servers and models.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import REPO_ROOT
from benchmarks.report import SECTIONS
from tests.paths import SHARED_DATA

pytestmark = pytest.mark.slow


def test_quick_benchmark_writes_every_section(quick_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "benchmarks"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--duration", "0.5"]
    command += ["--models", str(quick_models), "--data", str(SHARED_DATA), "--out", str(out)]
    completed = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    markdown = (out / "results.md").read_text()
    for section in SECTIONS:
        assert f"## {section}\n" in markdown
    results = json.loads((out / "results.json").read_text())
    product = results["http"]["product"]
    cells = product["matrix"] + product["batch"] + product["soak"]
    ceiling = results["http"]["ceiling"]
    cells += (
        ceiling["noop"] + ceiling["classify_same_server"] + results["http"]["naive"]["classify"]
    )
    cells += ceiling["stub_noop"] + ceiling["stub_classify"]
    assert {row["endpoint"] for row in product["matrix"]} == {"classify", "denoise", "similar"}
    assert all(row["requests_ok"] > 0 and row["errors"] == 0 for row in cells)
    assert product["memory"]["rss_mib_after_startup"] > 0
    assert {row["index"] for row in results["faiss"]["rows"]} == {"Flat", "IVF", "HNSW"}
    assert len(results["pipeline"]["rows"]) == 5
    assert [row["measure"] for row in results["headlines"]][-1] == "errors during the soak"


def test_missing_models_folder_is_one_line_error(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--models", str(tmp_path / "none")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip() == f"error: models folder not found: {tmp_path / 'none'}"
