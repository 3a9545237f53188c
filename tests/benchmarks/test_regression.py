"""The regression benchmark: its summary, how it serves a baseline, and a one-round run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.regression import TreeServer, has_production_command, main, summary
from tests.conftest import SHARED_DATA


def run(side: str, round_: int, rps: float, core_ms: float) -> dict[str, object]:
    return {"side": side, "round": round_, "rps": rps, "core_ms": core_ms}


def test_summary_takes_medians_and_per_round_ratios() -> None:
    runs = [
        run("baseline", 1, 100, 2.0),
        run("current", 1, 90, 2.2),
        run("baseline", 2, 200, 1.0),
        run("current", 2, 200, 1.0),
        run("baseline", 3, 150, 1.5),
        run("current", 3, 120, 1.8),
    ]
    result = summary(runs)
    assert result["baseline_rps"] == 150 and result["current_rps"] == 120
    assert result["baseline_core_ms"] == 1.5 and result["current_core_ms"] == 1.8
    assert result["rps_ratio"] == pytest.approx(0.9)  # of 0.9, 1.0, 0.8
    assert result["core_ms_ratio"] == pytest.approx(1.1)  # of 1.1, 1.0, 1.2


def test_a_commit_without_python_m_app_is_served_by_uvicorn(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    assert not has_production_command(tmp_path)
    with pytest.raises(ValueError, match="one worker only"):
        TreeServer(tmp_path, tmp_path, tmp_path / "log", workers=2)
    (tmp_path / "app" / "__main__.py").write_text("")
    assert has_production_command(tmp_path)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="no wrk: see scripts/install-wrk.sh")
def test_one_round_against_head_serves_both_sides(quick_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "regression.md"
    arguments = ["--baseline", "HEAD", "--models", str(quick_models), "--data", str(SHARED_DATA)]
    arguments += ["--rounds", "1", "--duration", "1", "--out", str(out)]
    assert main([*arguments, "--workers", "2", "--raw"]) == 0
    assert "2 worker process(es) per side, raw JPEG body" in out.read_text()
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 1 |")]
    assert [row.split("|")[2].strip() for row in rows] == ["baseline", "current"]
    for row in rows:
        rps, _, core_ms, _, failed = (float(cell) for cell in row.strip("|").split("|")[2:7])
        assert rps > 0 and core_ms > 0 and failed == 0, row
