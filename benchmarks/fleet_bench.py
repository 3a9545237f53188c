"""What acting as one service costs the worker processes of ``python -m app``.

* the check each worker makes every ``CHECK_INTERVAL_S`` for an admin change (a stat), per
  call and as the CPU an otherwise idle event loop spends on it;
* how long admin calls take against a real server with ``--workers`` workers (the answer
  waits until every worker serves the change), and how long they waited for the others;
* how long after SIGTERM to the supervising process new connections are refused, with a
  request in flight (which must still complete).

``python -m benchmarks.fleet_bench --models DIR [--workers 2] [--rounds 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from app.core.reload_signal import CHECK_INTERVAL_S, ReloadSignal
from benchmarks.servers import WorkersServer

CLASSIFIER = "signs_classifier"


def check_cost_us(runtime_dir: Path, calls: int = 100_000) -> float:
    signal_end = ReloadSignal(runtime_dir)
    signal_end.send()
    signal_end.received()
    old = time.time() - 60  # past the young-file window, where each check reads the file
    os.utime(signal_end.path, (old, old))
    signal_end.received()
    start = time.perf_counter()
    for _ in range(calls):
        signal_end.received()
    return (time.perf_counter() - start) / calls * 1e6


def idle_loop_cpu_ms_per_s(runtime_dir: Path, interval_s: float | None, seconds: float) -> float:
    """CPU per second of an event loop that only sleeps in steps of 0.1 s (uvicorn's tick),
    with or without the check every ``interval_s``."""
    signal_end = ReloadSignal(runtime_dir)

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.1)

    async def follow(interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            signal_end.received()

    async def main() -> float:
        tasks = [asyncio.create_task(tick())]
        if interval_s is not None:
            tasks.append(asyncio.create_task(follow(interval_s)))
        start = time.process_time()
        await asyncio.sleep(seconds)
        used = time.process_time() - start
        for task in tasks:
            task.cancel()
        return used

    return asyncio.run(main()) / seconds * 1000


def admin_calls(server: WorkersServer, models: Path, rounds: int) -> dict[str, object]:
    timings: dict[str, list[float]] = {"reload": [], "label": [], "rollback": []}
    waited: dict[str, list[float]] = {key: [] for key in timings}
    confirmed = set()
    labels = f"{server.base_url}/admin/models/{CLASSIFIER}/labels/stable"
    for _ in range(rounds):
        for key, method, url, body in (
            ("reload", "POST", f"{server.base_url}/admin/reload", None),
            ("label", "PUT", labels, {"version": 1}),
            ("label", "DELETE", labels, None),
            ("rollback", "POST", f"{server.base_url}/admin/rollback/{CLASSIFIER}", None),
            ("label", "DELETE", labels, None),
        ):
            start = time.perf_counter()
            answer = httpx.request(method, url, json=body, timeout=120)
            timings[key].append((time.perf_counter() - start) * 1000)
            answer.raise_for_status()
            workers = answer.json()["workers"]
            waited[key].append(workers["waited_s"] * 1000)
            confirmed.add((workers["confirmed"], workers["total"]))
    return {
        key: {
            "median_ms": round(statistics.median(values), 1),
            "max_ms": round(max(values), 1),
            "waited_median_ms": round(statistics.median(waited[key]), 1),
        }
        for key, values in timings.items()
    } | {"confirmed/total seen": sorted(confirmed)}


def stop_with_request_in_flight(server: WorkersServer) -> dict[str, float]:
    address = ("127.0.0.1", server.port)
    body = json.dumps({"version": 1}).encode()
    head = (
        f"PUT /admin/models/{CLASSIFIER}/labels/stable HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    in_flight = socket.create_connection(address, timeout=60)
    in_flight.sendall(head + body[:3])
    time.sleep(0.5)  # the worker has read the head
    start = time.perf_counter()
    server.started.send_signal(signal.SIGTERM)
    answered = reset = 0
    while True:
        try:
            probe = socket.create_connection(address, timeout=10)
        except ConnectionRefusedError:
            refused_s = time.perf_counter() - start
            break
        with probe:
            try:
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answered += bool(probe.recv(64))
            except (BrokenPipeError, ConnectionResetError):
                reset += 1  # accepted just as a worker closed its socket
    in_flight.sendall(body[3:])
    status = in_flight.recv(64).split(b" ", 2)[1]
    in_flight.close()
    return {
        "refused_after_ms": round(refused_s * 1000, 1),
        "probes_answered": answered,
        "probes_reset": reset,
        "in_flight_status": int(status),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runtime = Path(scratch)
        print(f"check: {check_cost_us(runtime):.2f} us per call")
        for interval in (None, 0.5, CHECK_INTERVAL_S, 0.05):
            cost = idle_loop_cpu_ms_per_s(runtime, interval, 10)
            print(f"idle loop, check every {interval} s: {cost:.3f} CPU ms per s")
        models = runtime / "models"
        shutil.copytree(args.models, models)
        second = models / CLASSIFIER / "2"
        if not second.exists():  # rollback needs two versions
            shutil.copytree(models / CLASSIFIER / "1", second)
            metadata = json.loads((second / "metadata.json").read_text())
            (second / "metadata.json").write_text(json.dumps({**metadata, "version": 2}))
        with WorkersServer(models, args.workers, runtime / "server.log") as server:
            while httpx.post(f"{server.base_url}/admin/reload").json()["workers"]["total"] < (
                args.workers
            ):  # a worker joins once its start-up is over
                time.sleep(0.5)
            print(json.dumps(admin_calls(server, models, args.rounds), indent=1))
            print(json.dumps(stop_with_request_in_flight(server)))


if __name__ == "__main__":
    main()
