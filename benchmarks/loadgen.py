"""Closed-loop HTTP/1.1 load generator, run as its own process.

Why not httpx: on a 2-core machine the client competes with the server for CPU, and an
httpx ``AsyncClient`` spends several times more CPU per request than the server's no-op
route, so it would measure itself. Why not wrk: it needs a system package (and a Lua
script for multipart bodies) that CI and a fresh checkout do not have. This client sends
pre-encoded request bytes over keep-alive sockets on uvloop and parses only the status
line and framing headers, which keeps its cost well below the server's; it reports its
own CPU time so the table shows how much of the machine it took.

Usage (what :func:`run_load` does): ``python -m benchmarks.loadgen SPEC.json`` prints a
JSON result on stdout. The spec names the request files (raw HTTP request bytes) that
each connection sends in turn, the concurrency, a duration and a request cap.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import uvloop

from benchmarks import REPO_ROOT

REQUEST_TIMEOUT_S = 30.0


@dataclass
class LoadSpec:
    """One load run: every connection cycles through ``requests`` (raw HTTP bytes files)."""

    port: int
    request_files: list[str]
    concurrency: int
    duration_s: float
    max_requests: int
    warmup_s: float = 1.0
    host: str = "127.0.0.1"
    server_pid: int | None = None  # when given, its CPU time over the measured phase is read


@dataclass
class LoadResult:
    concurrency: int
    completed: int
    ok: int
    elapsed_s: float
    requests_per_s: float
    latency_ms: dict[str, float]
    status_counts: dict[str, int]
    ok_latency_ms: dict[str, float] = field(default_factory=dict)  # 2xx responses only
    errors: dict[str, int] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None
    server_loop_cpu_s: float | None = None  # the main thread: the event loop, under the GIL

    @property
    def error_count(self) -> int:
        failed_statuses = sum(n for code, n in self.status_counts.items() if code[0] != "2")
        return failed_statuses + sum(self.errors.values())


class _Recorder:
    """Shared by all connections of one phase (one event loop, so no locking)."""

    def __init__(self, deadline: float, max_requests: int) -> None:
        self.deadline = deadline
        self.remaining = max_requests
        self.latencies: list[float] = []
        self.ok_latencies: list[float] = []  # 2xx only: what accepted requests waited
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def take(self) -> bool:
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.remaining -= 1
        return True


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server will close."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = closing = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            closing = b"close" in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status, closing


async def _connection(spec: LoadSpec, requests: list[bytes], recorder: _Recorder, offset: int):
    """One keep-alive connection sending requests back to back (closed loop)."""
    cycle = itertools.islice(itertools.cycle(requests), offset % len(requests), None)
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        while recorder.take():
            request = next(cycle)
            start = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    if connection is None:
                        connection = await asyncio.open_connection(spec.host, spec.port)
                    reader, writer = connection
                    writer.write(request)
                    status, closing = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as error:
                recorder.errors[type(error).__name__] += 1
                if connection is not None:
                    connection[1].close()
                connection = None
                continue
            latency = time.perf_counter() - start
            recorder.latencies.append(latency)
            if 200 <= status < 300:
                recorder.ok_latencies.append(latency)
            recorder.statuses[str(status)] += 1
            if closing:
                writer.close()
                connection = None
    finally:
        if connection is not None:
            connection[1].close()


async def _phase(spec: LoadSpec, requests: list[bytes], duration_s: float, cap: int):
    recorder = _Recorder(time.perf_counter() + duration_s, cap)
    start = time.perf_counter()
    await asyncio.gather(
        *(_connection(spec, requests, recorder, i) for i in range(spec.concurrency))
    )
    return recorder, time.perf_counter() - start


async def _run(spec: LoadSpec) -> LoadResult:
    requests = [Path(path).read_bytes() for path in spec.request_files]
    if spec.warmup_s > 0:
        await _phase(spec, requests, spec.warmup_s, spec.max_requests)
    cpu_before, server_before = _cpu_seconds(), _server_cpu(spec.server_pid)
    recorder, elapsed = await _phase(spec, requests, spec.duration_s, spec.max_requests)
    server_after = _server_cpu(spec.server_pid)
    server_used = (
        {key: server_after[key] - server_before[key] for key in server_after}
        if server_before and server_after
        else {}
    )
    ok = sum(n for code, n in recorder.statuses.items() if code.startswith("2"))
    return LoadResult(
        concurrency=spec.concurrency,
        completed=len(recorder.latencies),
        ok=ok,
        elapsed_s=elapsed,
        requests_per_s=ok / elapsed if elapsed > 0 else 0.0,
        latency_ms=_percentiles(recorder.latencies),
        status_counts=dict(recorder.statuses),
        ok_latency_ms=_percentiles(recorder.ok_latencies),
        errors=dict(recorder.errors),
        client_cpu_s=_cpu_seconds() - cpu_before,
        server_cpu_s=server_used.get("process"),
        server_loop_cpu_s=server_used.get("main thread"),
    )


def _percentiles(latencies_s: list[float]) -> dict[str, float]:
    """p50, p95 and p99 in milliseconds (empty when nothing completed)."""
    if not latencies_s:
        return {}
    values = np.percentile(np.asarray(latencies_s) * 1000.0, [50, 95, 99]).tolist()
    return dict(zip(("p50", "p95", "p99"), values, strict=True))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(pid: int | None) -> dict[str, float] | None:
    """CPU seconds of process ``pid`` (all threads) and of its main thread (Linux ``/proc``)."""
    if pid is None:
        return None
    return {
        "process": _stat_cpu(Path(f"/proc/{pid}/stat")),
        "main thread": _stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat")),
    }


def _stat_cpu(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(spec: LoadSpec) -> LoadResult:
    """Run ``spec`` in a separate Python process and return its measurements."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec_file:
        json.dump(asdict(spec), spec_file)
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.loadgen", spec_file.name],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=spec.warmup_s + spec.duration_s + REQUEST_TIMEOUT_S + 60,
        )
    finally:
        Path(spec_file.name).unlink()
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed: {completed.stderr.strip()[-2000:]}")
    return LoadResult(**json.loads(completed.stdout))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.loadgen SPEC.json", file=sys.stderr)
        return 2
    spec = LoadSpec(**json.loads(Path(argv[0]).read_text()))
    result = uvloop.run(_run(spec))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
