"""Issue #25's hostile request corpus against a real ``python -m app`` with two workers and
the default limits (benchmarks/hostile_requests.py).

Each request must get a status from its expected set (never a 5xx, never a dropped
connection) and stay under a generous bound of server CPU and memory, read from /proc: the
attacks cost seconds and hundreds of megabytes when a step of the input gate is missing,
so a bound several times the issue's goal (0.25 s, 150 MB) still tells them apart without
timing anything finely; the measured costs are benchmarks/hostile_server_bench.py's job.
Then a short flood of the corpus from 16 clients must leave /healthz answering, and no
worker may have been restarted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.hostile_requests import HostileRequest, corpus
from benchmarks.hostile_server_bench import flood, measure
from benchmarks.servers import WorkersServer, worker_pids
from tests.app.model_files import copy_models

pytestmark = pytest.mark.slow

CPU_BOUND_S = 1.0
RSS_BOUND_MIB = 300.0
CLIENT_TIMEOUT_S = 60.0
PROBE_BOUND_MS = 2000.0
FLOOD_SECONDS = 4.0

CORPUS = corpus()


class GateServer(WorkersServer):
    """The server, with the worker pids it started with."""

    started_workers: list[int]


@pytest.fixture(scope="module")
def server(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateServer]:
    """``python -m app`` with WORKERS=2 on a private copy of the models (the corpus writes
    to the admin endpoint, open by default)."""
    work = tmp_path_factory.mktemp("input_gate")
    models = copy_models(quick_models, work / "models")
    with GateServer(models, 2, work / "server.log") as running:
        running.started_workers = worker_pids(running.pid)
        assert len(running.started_workers) == 2
        yield running


@pytest.mark.parametrize("hostile", CORPUS, ids=[request.name for request in CORPUS])
def test_hostile_request_is_answered_cheaply(server: GateServer, hostile: HostileRequest) -> None:
    result = measure(server, hostile, CLIENT_TIMEOUT_S)
    assert not result.problems, result.problems
    assert all(status is not None and status < 500 for status in result.statuses)
    assert result.cpu_s < CPU_BOUND_S, f"{result.cpu_s:.2f} s of server CPU"
    assert result.rss_growth_mib < RSS_BOUND_MIB, f"{result.rss_growth_mib:.0f} MiB more"


def test_healthz_answers_during_a_flood_of_the_corpus(server: GateServer) -> None:
    watched = flood(server.base_url, CORPUS, FLOOD_SECONDS)
    probes = watched["healthz"]
    assert probes["requests"] > 0
    assert probes["statuses"] == {"200": probes["requests"]}, probes
    assert probes["max_ms"] < PROBE_BOUND_MS, probes
    assert watched["flood"]["requests"] > 0


def test_no_worker_was_restarted(server: GateServer) -> None:
    assert server.process is not None and server.process.poll() is None
    assert worker_pids(server.pid) == server.started_workers, server.log_tail()
