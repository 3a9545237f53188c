"""Overload: ``/classify`` at a concurrency the service serves well, and at several times it.

``python -m benchmarks.overload_bench --models DIR [--data DIR] [--duration S]
[--concurrency 32 256] [--port P --pid PID] [--wrk]``

Starts ``uvicorn app.main:app`` with the given models and its default overload settings (or
measures a server already listening on ``--port``), drives ``/classify`` with the closed-loop
load generator of ``benchmarks/loadgen.py`` (its own process) at each concurrency, and probes
``GET /healthz`` every 50 ms meanwhile from this process. Prints one markdown table: accepted
(2xx) throughput and latency, the share of requests shed (503), the shed counters from
``/metrics``, the health probe's latency, and the CPU cores server and client used.

``--wrk`` adds a run of Debian's ``wrk`` (C, ``apt-get install wrk``) at each concurrency
as a second opinion; it cannot tell accepted from shed latencies, so it reports all of them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import REPO_ROOT
from benchmarks.loadgen import LoadResult, LoadSpec, run_load
from benchmarks.payloads import multipart_body, signs_images, write_requests
from benchmarks.servers import UvicornServer

HEALTH_PERIOD_S = 0.05
SHED_METRIC = "cellsign_shed_requests"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"


def probe_health(base_url: str, stop: threading.Event) -> list[float]:
    """GET /healthz every ``HEALTH_PERIOD_S`` until ``stop``; the latencies in seconds."""
    latencies = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not stop.is_set():
            start = time.perf_counter()
            client.get("/healthz").raise_for_status()
            latencies.append(time.perf_counter() - start)
            stop.wait(HEALTH_PERIOD_S)
    return latencies


def shed_counts(base_url: str) -> dict[str, float]:
    """The server's shed-request counters, summed over batchers, by reason."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != SHED_METRIC:
            continue
        for sample in family.samples:
            if sample.name == f"{SHED_METRIC}_total":
                reason = sample.labels["reason"]
                counts[reason] = counts.get(reason, 0.0) + sample.value
    return counts


def measure(
    port: int, pid: int | None, request_files: list[str], concurrency: int, duration_s: float
) -> tuple[LoadResult, list[float], dict[str, float]]:
    """One load phase with the health probe running; returns the load result, the probe's
    latencies and how many requests the server shed meanwhile, by reason."""
    base_url = f"http://127.0.0.1:{port}"
    before = shed_counts(base_url)
    stop = threading.Event()
    probes: list[float] = []
    prober = threading.Thread(target=lambda: probes.extend(probe_health(base_url, stop)))
    spec = LoadSpec(port, request_files, concurrency, duration_s, 10_000_000, server_pid=pid)
    prober.start()
    try:
        result = run_load(spec)
    finally:
        stop.set()
        prober.join()
    after = shed_counts(base_url)
    shed = {reason: after[reason] - before.get(reason, 0.0) for reason in after}
    return result, probes, shed


def wrk_run(
    port: int, body: bytes, content_type: str, concurrency: int, duration_s: float, work: Path
) -> tuple[str, list[float], dict[str, float]]:
    """``wrk`` posting ``body`` to /classify with the health probe running; returns wrk's
    summary lines, the probe's latencies and the shed counts."""
    (work / "body.bin").write_bytes(body)
    script = work / "classify.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{content_type}"\n'
        f'local f = io.open("{work / "body.bin"}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    base_url = f"http://127.0.0.1:{port}"
    before = shed_counts(base_url)
    stop = threading.Event()
    probes: list[float] = []
    prober = threading.Thread(target=lambda: probes.extend(probe_health(base_url, stop)))
    command = ["wrk", "-t2", f"-c{concurrency}", f"-d{duration_s:g}s", "--latency"]
    prober.start()
    try:
        output = subprocess.run(
            [*command, "-s", str(script), f"{base_url}/classify"],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration_s + 60,
        ).stdout
    finally:
        stop.set()
        prober.join()
    after = shed_counts(base_url)
    shed = {reason: after[reason] - before.get(reason, 0.0) for reason in after}
    keep = re.compile(r"^\s*(Latency|50%|99%|\d+ requests|Non-2xx|Socket errors|Requests/sec)")
    return "\n".join(line for line in output.splitlines() if keep.match(line)), probes, shed


def table_row(result: LoadResult, probes: list[float], shed: dict[str, float]) -> str:
    completed = max(result.completed, 1)
    rejected = sum(n for code, n in result.status_counts.items() if code == "503")
    health_ms = np.asarray(probes) * 1000.0
    ok = result.ok_latency_ms
    cells = [
        str(result.concurrency),
        f"{result.requests_per_s:,.0f}",
        f"{ok.get('p50', float('nan')):.0f}",
        f"{ok.get('p99', float('nan')):.0f}",
        f"{rejected / completed:.0%}",
        ", ".join(f"{reason} {count:,.0f}" for reason, count in sorted(shed.items()) if count),
        f"{sum(result.errors.values())}",
        f"{np.percentile(health_ms, 50):.1f}" if health_ms.size else "-",
        f"{np.percentile(health_ms, 99):.1f}" if health_ms.size else "-",
        f"{health_ms.max():.1f}" if health_ms.size else "-",
        f"{(result.server_cpu_s or 0) / result.elapsed_s:.2f}",
        f"{result.client_cpu_s / result.elapsed_s:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| clients | accepted req/s | accepted p50 ms | accepted p99 ms | shed (503) | shed by reason"
    " | client errors | /healthz p50 ms | /healthz p99 ms | /healthz max ms | server cores"
    " | client cores |\n" + "|---" * 12 + "|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, help="models folder (when starting a server)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--port", type=int, help="measure the server already on this port")
    parser.add_argument("--pid", type=int, help="its process id (for its CPU time)")
    parser.add_argument("--wrk", action="store_true", help="also run wrk at each concurrency")
    args = parser.parse_args(argv)
    if args.port is None and args.models is None:
        parser.error("give --models (to start a server) or --port")
    images = [[image] for image in signs_images(args.data, 16)]
    with tempfile.TemporaryDirectory() as work:
        if args.port is not None:
            rows = _run(args, Path(work), args.port, args.pid, images)
        else:
            env = {"MODEL_DIR": str(args.models), "DEVICE": "cpu", "RELOAD_INTERVAL_S": "0"}
            with UvicornServer("app.main:app", env, Path(work) / "server.log", "/readyz") as server:
                rows = _run(args, Path(work), server.port, server.pid, images)
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(HEADER)
    print("\n".join(rows))
    return 0


def _run(
    args: argparse.Namespace, work: Path, port: int, pid: int | None, images: list[list[bytes]]
) -> list[str]:
    files = write_requests(work, "classify", "/classify", port, images)
    print(f"load average at the start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = [
        table_row(*measure(port, pid, files, concurrency, args.duration))
        for concurrency in args.concurrency
    ]
    if args.wrk and shutil.which("wrk"):
        body, content_type = multipart_body(images[0])
        for concurrency in args.concurrency:
            summary, probes, shed = wrk_run(
                port, body, content_type, concurrency, args.duration, work
            )
            health_ms = np.asarray(probes) * 1000.0
            print(f"wrk, {concurrency} connections:\n{summary}")
            print(
                f"  shed: {shed}; /healthz p50 {np.percentile(health_ms, 50):.1f} ms, "
                f"p99 {np.percentile(health_ms, 99):.1f} ms, max {health_ms.max():.1f} ms"
            )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
