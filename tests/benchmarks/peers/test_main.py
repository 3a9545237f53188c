"""The peer benchmark's command without installing any peer: cellsign alone for a second,
a stand-in peer server (``fake_peer``) through the same start/check/measure/stop path, the
median table, and the arguments."""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks import REPO_ROOT
from benchmarks.peers import __main__ as peers_main
from benchmarks.peers import report
from benchmarks.peers.__main__ import WrongAnswerError, build_parser, main, measure, rotated
from benchmarks.peers.catalog import CELLSIGN, PEERS, Config, Peer
from benchmarks.peers.report import markdown, medians
from benchmarks.peers.requests import json_probabilities, raw_request
from benchmarks.servers import running
from tests.benchmarks.peers import fake_peer
from tests.conftest import SHARED_DATA

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="scripts/install-wrk.sh")
FAKE = Peer(
    "fake",
    "Fake",
    "fake",
    (),
    "tests.benchmarks.peers.fake_peer",
    "process(es)",
    "none",
    lambda image: [raw_request(image, "/anything", json_probabilities)],
)
EXPECTED = np.array([fake_peer.PROBABILITIES], dtype=np.float32)


def _helper_pid(log: Path) -> int:
    return int(re.search(r"helper (\d+)", log.read_text()).group(1))  # type: ignore[union-attr]


@needs_wrk
def test_a_peer_is_checked_measured_and_stopped_with_its_helpers(tmp_path: Path) -> None:
    config = Config(FAKE, 1)
    rows = measure(config, Path(sys.executable), tmp_path, b"jpeg", EXPECTED, (1, 1), tmp_path, 1)
    (row,) = rows
    assert row["rps"] > 0 and row["failed"] == 0 and row["server_core_ms_per_request"] > 0
    assert row["wrk_core_percent"] > 0 and row["request"] == "raw body"
    assert not running(_helper_pid(tmp_path / "fake-1-1.log"))


def test_a_wrong_answer_stops_the_run_and_the_server(tmp_path: Path) -> None:
    wrong = np.array([[0.7, 0.1, 0.2]], dtype=np.float32)
    with pytest.raises(WrongAnswerError, match="raw body to /anything"):
        measure(Config(FAKE, 1), Path(sys.executable), tmp_path, b"x", wrong, (1, 1), tmp_path, 1)
    assert not running(_helper_pid(tmp_path / "fake-1-1.log"))


@needs_wrk
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no data at {SHARED_DATA}")
def test_cellsign_alone_for_a_second(quick_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "peers.md"
    arguments = ["--models", str(quick_models), "--data", str(SHARED_DATA), "--out", str(out)]
    arguments += ["--peers", "cellsign", "--parallel", "1", "--duration", "1", "--warmup", "1"]
    assert main([*arguments, "--rounds", "1"]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| cellsign |")]
    assert sorted(row.split("|")[4].strip() for row in rows) == [
        "multipart",
        "raw body",
        "v2 binary tensor",
    ]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        rps, core_ms, wrk_percent = float(cells[4]), float(cells[7]), float(cells[9])
        assert rps > 0 and core_ms > 0 and wrk_percent > 0 and cells[10] == "0", row
        assert cells[5] == "-"  # no peer measured: no ratio
    assert re.search(r"machine: \d+ cores", text) and "class 0 in the data" in text


def test_medians_over_rounds_and_missing_percentiles() -> None:
    def row(round_: int, rps: float, p99: float | None) -> dict[str, object]:
        return {
            "peer": "ray",
            "parallel": 2,
            "request": "raw body",
            "round": round_,
            "rps": rps,
            "p99_ms": p99,
            "server_core_ms_per_request": 2.0,
            "server_cores": 1.5,
            "wrk_core_percent": 3.0,
            "failed": round_,
            "socket_errors": "",
            "load_average": 1.0,
        }

    (merged,) = medians([row(1, 100, None), row(2, 300, 50.0), row(3, 200, None)])
    assert (merged["rps"], merged["p99_ms"], merged["failed"], merged["rounds"]) == (
        200,
        50.0,
        6,
        3,
    )


def test_arguments_name_known_peers_and_counts() -> None:
    parser = build_parser()
    parsed = parser.parse_args(["--models", "m", "--peers", "ray,cellsign", "--parallel", "2"])
    assert (parsed.peers, parsed.parallel) == (["ray", "cellsign"], [2])
    for bad in (
        ["--peers", "triton"],
        ["--parallel", "0"],
        ["--parallel", "x"],
        ["--duration", "0.5"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(["--models", "m", *bad])


def test_missing_data_is_one_plain_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("scripts/install-wrk.sh")
    assert main(["--models", str(tmp_path), "--data", str(tmp_path), "--peers", "cellsign"]) == 1
    assert "(--data)" in capsys.readouterr().err


def test_every_peer_has_a_server_module_and_pinned_versions() -> None:
    for peer in PEERS.values():
        if peer.name == CELLSIGN:
            continue
        module = REPO_ROOT / (peer.module.replace(".", os.sep) + ".py")
        assert module.is_file(), peer.module
        (pinned,) = [req for req in peer.requirements if req.startswith(peer.package)]
        assert "==" in pinned, pinned
        assert peer.requests(b"jpeg"), peer.name
    assert replace(FAKE, name="x").settings(2) == "2 process(es); none"


def test_rounds_rotate_the_starting_server() -> None:
    configs = [Config(FAKE, parallel) for parallel in (1, 2, 3)]
    orders = [[c.parallel for c in rotated(configs, by)] for by in range(4)]
    assert orders == [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 2, 3]]


@needs_wrk
def test_a_failing_server_is_reported_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = replace(FAKE, name="broken", module="tests.benchmarks.peers.no_such_module")
    fakes = {"fake": FAKE, "broken": broken}
    monkeypatch.setattr(peers_main, "PEERS", fakes)
    monkeypatch.setattr(report, "PEERS", fakes)
    arguments = build_parser().parse_args(["--models", str(tmp_path), "--duration", "1"])
    arguments.peers, arguments.parallel, arguments.warmup = ["broken", "fake"], [1], 1
    python = Path(sys.executable)
    rows, problems = peers_main.run_rounds(
        arguments, tmp_path, b"x", EXPECTED, {"fake": python, "broken": python}
    )
    assert [row["peer"] for row in rows] == ["fake"] * 3  # three rounds by default
    assert len(problems) == 3 and all("broken-1" in problem for problem in problems)
    context = {"summary": "", "versions": {"fake": {"fake": "1.0"}}, "rounds": rows}
    text = markdown(medians(rows), {**context, "problems": problems, "conditions": {}})
    assert "| Fake | 1.0 | 1 process(es); none | raw body |" in text
    assert "Not measured" in text and "round 3, broken-1" in text
