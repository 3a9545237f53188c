"""``python -m benchmarks.hostile_server_bench --models DIR [--quick] [--flood-seconds S]
[--out FILE]``: the hostile request corpus against a real ``python -m app`` with 2 workers.

Two phases, on one server started with default settings (a private copy of the models,
since the corpus writes to the open admin endpoint):

1. Each request of ``benchmarks/hostile_requests.py`` alone: its statuses, the server's CPU
   seconds (supervisor and workers, from /proc, counted until the server is idle again),
   and the largest peak-RSS growth of a worker while it ran (``VmHWM``, reset before each
   request), against the issue's goals: 0.25 s of CPU, 150 MB, no 5xx.
2. A flood: 16 hostile clients (in their own process, cycling through the corpus) for
   ``--flood-seconds`` while a friendly client sends SIGNS images to /classify one after
   another and a probe asks /healthz ten times a second on fresh connections; the friendly
   and probe latencies are compared with a quiet spell before the flood.

Whether any worker pid changed (a restart) is checked after each phase. The report
(machine, versions, command, tables) is written to ``--out`` and printed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

from benchmarks import REPO_ROOT
from benchmarks.environment import machine_description
from benchmarks.hostile_requests import (
    Answer,
    Body,
    HostileRequest,
    corpus,
    problems,
    quick_corpus,
    send,
    send_all,
)
from benchmarks.servers import (
    WorkersServer,
    peak_rss_mib,
    reset_peak_rss,
    rss_mib,
    worker_pids,
)

WORKERS = 2
CPU_GOAL_S = 0.25
RSS_GOAL_MIB = 150 * 1e6 / 2**20  # 150 MB
LATENCY_GOAL_MS = 250.0
FLOOD_CLIENTS = 16
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "hostile_server_results.md"
SIGNS_IMAGES = REPO_ROOT.parent / "shared" / "data" / "signs" / "train"


@dataclass
class Measured:
    """One hostile request (``copies`` at once) and what it cost the server."""

    request: HostileRequest
    answers: list[Answer]
    cpu_s: float
    rss_growth_mib: float
    seconds: float
    problems: list[str]

    @property
    def statuses(self) -> list[int | None]:
        return [answer.status for answer in self.answers]

    def within_goals(self) -> bool:
        return (
            not self.problems and self.cpu_s <= CPU_GOAL_S and self.rss_growth_mib <= RSS_GOAL_MIB
        )


def settled_cpu_seconds(server: WorkersServer, poll_s: float = 0.05, limit_s: float = 5.0) -> float:
    """The server's CPU seconds once it has stopped spending them (a decode thread may go on
    after the answer): two polls in a row that add under 2 ms, or ``limit_s``."""
    deadline = time.monotonic() + limit_s
    last = server.cpu_seconds()
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(poll_s)
        now = server.cpu_seconds()
        quiet = quiet + 1 if now - last < 0.002 else 0
        last = now
    return last


def measure(server: WorkersServer, request: HostileRequest, timeout_s: float) -> Measured:
    """Send ``request`` alone and read what it cost: CPU of every server process, and the
    largest growth of a worker's peak resident memory over its size just before (its
    resident size after, where the kernel does not let the peak be reset)."""
    built = request.build()
    before_rss, peak_reset = {}, {}
    for pid in worker_pids(server.pid):
        before_rss[pid] = rss_mib(pid)
        peak_reset[pid] = reset_peak_rss(pid)
    cpu_before = settled_cpu_seconds(server)
    start = time.monotonic()
    answers = send_all(server.base_url, request, timeout_s, built)
    seconds = time.monotonic() - start
    cpu = settled_cpu_seconds(server) - cpu_before
    growth = 0.0
    for pid, rss in before_rss.items():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # died: see the pids
            after = peak_rss_mib(pid) if peak_reset[pid] else rss_mib(pid)
            growth = max(growth, after - rss)
    return Measured(request, answers, cpu, growth, seconds, problems(request, answers))


def run_corpus(
    server: WorkersServer,
    requests: list[HostileRequest],
    timeout_s: float,
    progress: Callable[[Measured], None] | None = None,
) -> list[Measured]:
    results = []
    for request in requests:
        measured = measure(server, request, timeout_s)
        results.append(measured)
        if progress is not None:
            progress(measured)
    return results


# ---------------------------------------------------------------------------------------
# The flood.


def _flood_worker(
    base_url: str, names: tuple[str, ...], clients: int, seconds: float, timeout_s: float
) -> dict[str, Any]:
    """In its own process: ``clients`` threads, each sending the named corpus requests in
    turn (from its own starting point) until ``seconds`` have passed. Returns the status
    counts and how many requests went out."""
    chosen, built = _built(names)
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(offset: int) -> None:
        position = offset
        while time.monotonic() < stop_at:
            request = chosen[position % len(chosen)]
            position += 1
            answer = send(base_url, request, timeout_s, built[request.name])
            with lock:
                statuses[str(answer.status)] += 1

    threads = [
        threading.Thread(target=client, args=(n * len(chosen) // clients,)) for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"statuses": dict(statuses), "requests": sum(statuses.values())}


@dataclass
class Latencies:
    """Seconds per request and the statuses of one client."""

    seconds: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def percentile_ms(self, fraction: float) -> float | None:
        if not self.seconds:
            return None
        ordered = sorted(self.seconds)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.seconds),
            "p50_ms": self.percentile_ms(0.5),
            "p99_ms": self.percentile_ms(0.99),
            "max_ms": 1000 * max(self.seconds) if self.seconds else None,
            "statuses": dict(self.statuses),
        }


def friendly_image() -> tuple[str, bytes]:
    """A SIGNS training photo (the shared data), else a small JPEG made here."""
    photos = sorted(SIGNS_IMAGES.glob("*.jpg"))
    if photos:
        return photos[0].name, photos[0].read_bytes()
    from benchmarks.hostile_inputs import small_jpeg

    return "hand.jpg", small_jpeg()


def _friendly(base_url: str, stop: threading.Event, into: Latencies) -> None:
    """One /classify at a time on a keep-alive connection, as a program would send them."""
    name, image = friendly_image()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                status = str(client.post("/classify", files={"file": (name, image)}).status_code)
            except httpx.HTTPError as error:
                status = error.__class__.__name__
            into.seconds.append(time.perf_counter() - start)
            into.statuses[status] += 1


def _probe(base_url: str, stop: threading.Event, into: Latencies, every_s: float = 0.1) -> None:
    """GET /healthz on a fresh connection each time, as an orchestrator's probe does. One
    client without keep-alive: ``httpx.get`` would also build a TLS context per call, tens
    of milliseconds of the client's own CPU counted as latency."""
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base_url, timeout=10, limits=no_keep_alive) as client:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                status = str(client.get("/healthz").status_code)
            except httpx.HTTPError as error:
                status = error.__class__.__name__
            into.seconds.append(time.perf_counter() - start)
            into.statuses[status] += 1
            stop.wait(max(0.0, every_s - (time.perf_counter() - start)))


def watch(base_url: str, seconds: float, work: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Friendly and probe latencies for ``seconds`` (or while ``work()`` runs, if longer);
    returns their summaries and ``work``'s result."""
    friendly, probe = Latencies(), Latencies()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_friendly, args=(base_url, stop, friendly)),
        threading.Thread(target=_probe, args=(base_url, stop, probe)),
    ]
    for thread in threads:
        thread.start()
    start = time.monotonic()
    result = work() if work is not None else None
    time.sleep(max(0.0, seconds - (time.monotonic() - start)))
    stop.set()
    for thread in threads:
        thread.join()
    return {
        "friendly": friendly.summary(),
        "healthz": probe.summary(),
        "seconds": time.monotonic() - start,
        "flood": result,
    }


def flood(
    base_url: str, requests: list[HostileRequest], seconds: float, clients: int = FLOOD_CLIENTS
) -> dict[str, Any]:
    """``clients`` hostile clients in another process (so that their sending does not hold
    this process's interpreter lock from the friendly client) for ``seconds``, watched."""
    names = tuple(request.name for request in requests)
    timeout_s = max(10.0, seconds)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        pool.submit(_build, names).result()  # the bodies are built before the clock starts

        def hostile() -> dict[str, Any]:
            return pool.submit(_flood_worker, base_url, names, clients, seconds, timeout_s).result()

        return watch(base_url, seconds, hostile)


def _build(names: tuple[str, ...]) -> int:
    """Build the named requests in this process (a pool's), for ``_flood_worker`` to send."""
    return len(_built(names)[0])


@functools.cache
def _built(
    names: tuple[str, ...],
) -> tuple[list[HostileRequest], dict[str, tuple[dict[str, str], Body]]]:
    """The named corpus requests and their headers and bodies, built once per process."""
    by_name = {request.name: request for request in corpus()}
    chosen = [by_name[name] for name in names]
    return chosen, {request.name: request.build() for request in chosen}


# ---------------------------------------------------------------------------------------
# Report.


def _cell(values: list[Any]) -> str:
    return ", ".join(str(value) for value in values)


def _text(value: str, characters: int) -> str:
    """``value`` fit for one table cell."""
    return " ".join(value.replace("|", "/").split())[:characters]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def markdown(
    results: list[Measured],
    quiet: dict[str, Any],
    flooded: dict[str, Any],
    pids: dict[str, list[int]],
    command: str,
    machine: dict[str, Any],
) -> str:
    lines = [
        "# Hostile requests against `python -m app` (2 workers, default settings)",
        "",
        f"Command: `{command}`",
        "",
        "Machine and versions:",
        "",
        "```json",
        json.dumps(machine, indent=1),
        "```",
        "",
        f"Goals (issue #25): each hostile request within {CPU_GOAL_S} s of server CPU and "
        f"150 MB of memory, no 5xx, no worker restart; during the flood friendly /classify "
        f"p50 and /healthz p99 under {LATENCY_GOAL_MS:.0f} ms.",
        "",
        "CPU: user + system seconds of the supervisor and both workers (/proc), from before "
        "the request until the server is idle again. Memory: the largest growth of a "
        "worker's peak resident size (VmHWM, reset before each request) over its size "
        "just before. `x4`: four copies at once, measured together.",
        "",
    ]
    within = sum(result.within_goals() for result in results)
    over_cpu = [r for r in results if r.cpu_s > CPU_GOAL_S]
    over_rss = [r for r in results if r.rss_growth_mib > RSS_GOAL_MIB]
    server_errors = [r for r in results if any((s or 0) >= 500 for s in r.statuses)]
    no_answer = [r for r in results if None in r.statuses]
    wrong = [r for r in results if r.problems]
    restarted = (
        pids["before"] != pids["after_corpus"] or pids["after_corpus"] != pids["after_flood"]
    )
    lines += [
        "## Summary",
        "",
        f"* {within} of {len(results)} requests within every goal.",
        f"* Over {CPU_GOAL_S} s of CPU: {len(over_cpu)}"
        + (f" (worst {max(r.cpu_s for r in over_cpu):.2f} s)" if over_cpu else "")
        + f"; over 150 MB: {len(over_rss)}"
        + (f" (worst {max(r.rss_growth_mib for r in over_rss):.0f} MiB)" if over_rss else "")
        + ".",
        f"* Unexpected status or no answer: {len(wrong)}; 5xx: {len(server_errors)}; "
        f"no response: {len(no_answer)}.",
        f"* Worker pids: {pids['before']} at start, {pids['after_corpus']} after the corpus, "
        f"{pids['after_flood']} after the flood: "
        + ("**a worker restarted**." if restarted else "no restart."),
        "",
        "| kind | requests | within goals | max CPU s | max RSS growth MiB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    kinds: dict[str, list[Measured]] = {}
    for result in results:
        kinds.setdefault(result.request.kind, []).append(result)
    for kind, group in kinds.items():
        lines.append(
            f"| {kind} | {len(group)} | {sum(r.within_goals() for r in group)} | "
            f"{max(r.cpu_s for r in group):.3f} | {max(r.rss_growth_mib for r in group):.0f} |"
        )
    lines += [
        "",
        "## Flood",
        "",
        f"{FLOOD_CLIENTS} hostile clients cycling through the corpus for "
        f"{flooded['seconds']:.1f} s; one friendly client (SIGNS photo to /classify, one at a "
        "time, keep-alive) and a /healthz probe every 0.1 s on fresh connections. 'quiet': "
        "the same friendly client and probe alone, just before.",
        "",
        "| phase | friendly requests | friendly p50 ms | friendly p99 ms | friendly statuses |"
        " /healthz probes | /healthz p99 ms | /healthz max ms | /healthz statuses |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for phase, watched in (("quiet", quiet), ("flood", flooded)):
        friendly, probe = watched["friendly"], watched["healthz"]
        lines.append(
            f"| {phase} | {friendly['requests']} | {_ms(friendly['p50_ms'])} | "
            f"{_ms(friendly['p99_ms'])} | {friendly['statuses']} | {probe['requests']} | "
            f"{_ms(probe['p99_ms'])} | {_ms(probe['max_ms'])} | {probe['statuses']} |"
        )
    hostile = flooded.get("flood") or {}
    lines += [
        "",
        f"Hostile requests sent during the flood: {hostile.get('requests', 0)}, statuses "
        f"{hostile.get('statuses', {})} (None: closed or timed out without an answer).",
        "",
        "## Every request",
        "",
        "| request | kind | status | expected | CPU s | RSS growth MiB | wall s | verdict |"
        " answer (start) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for result in results:
        request = result.request
        verdict = (
            "ok"
            if result.within_goals()
            else "; ".join(
                [
                    *result.problems,
                    *([f"CPU over {CPU_GOAL_S} s"] if result.cpu_s > CPU_GOAL_S else []),
                    *(["memory over 150 MB"] if result.rss_growth_mib > RSS_GOAL_MIB else []),
                ]
            )
        )
        lines.append(
            f"| {request.name} | {request.kind} | {_cell(result.statuses)} | "
            f"{_cell(sorted(request.expected))} | {result.cpu_s:.3f} | "
            f"{result.rss_growth_mib:.0f} | {result.seconds:.2f} | "
            f"{_text(verdict, 160)} | {_text(result.answers[0].detail, 100)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="models folder (copied)")
    parser.add_argument("--quick", action="store_true", help="a few requests, 2 s flood")
    parser.add_argument("--flood-seconds", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout per request")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    arguments = parser.parse_args(argv)
    requests = quick_corpus() if arguments.quick else corpus()
    flood_seconds = arguments.flood_seconds or (2.0 if arguments.quick else 10.0)
    command = "python -m benchmarks.hostile_server_bench " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    machine = machine_description()
    with tempfile.TemporaryDirectory(prefix="hostile-server-") as work:
        models = Path(shutil.copytree(arguments.models, Path(work) / "models"))
        with WorkersServer(models, WORKERS, Path(work) / "server.log") as server:
            pids = {"before": worker_pids(server.pid)}

            def progress(measured: Measured) -> None:
                print(
                    f"{measured.request.name}: {measured.statuses} {measured.cpu_s:.3f} s CPU "
                    f"{measured.rss_growth_mib:.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )

            results = run_corpus(server, requests, arguments.timeout, progress)
            pids["after_corpus"] = worker_pids(server.pid)
            quiet = watch(server.base_url, min(flood_seconds, 3.0))
            flooded = flood(server.base_url, requests, flood_seconds)
            time.sleep(1.0)  # a worker that died in the flood is noticed and replaced
            pids["after_flood"] = worker_pids(server.pid)
    report = markdown(results, quiet, flooded, pids, command, machine)
    arguments.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
