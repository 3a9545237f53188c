"""``python -m benchmarks.gallery_http_bench --models DIR [--size N] [--reencode-size N]``: the
living gallery through a real ``python -m app`` (the embedded store), driven over HTTP.

1. Search: a gallery of ``--size`` synthetic 64-d codes (the clustered mixture and labels of
   ``benchmarks.gallery_index_bench``: 50%, 30%, 15% and 5% of the cells) is written
   through the store API; the server opens it (each worker builds its index) and wrk POSTs
   one real malaria cell to ``/similar`` (the query is encoded by the served autoencoder,
   then searched) with 1, 4 and 32 connections, without a filter and with the 5% and 50%
   labels. Recall is ``gallery_index_bench``'s job (the same index, in process).
2. Additions: distinct real cells from the malaria data through ``POST /gallery``, one per
   request from one client (latency), then batches of 64 from two clients, a connection per
   batch (items/s). The generator is Python (httpx): its own CPU is reported beside the
   figures.
3. Re-encoding: a gallery of ``--reencode-size`` cells; /similar throughput (wrk, 8
   connections) before, then while a new autoencoder version (a copy of the served one
   under the next number) re-encodes the gallery in the background, then the re-encoding
   alone. The machine is shared, so beside the req/s ratio (which moves with other
   processes' load) the share of the server's CPU the re-encoding took while searches ran
   is reported: what a saturated server loses to it.

Writes ``benchmarks/gallery_http_results.md`` (or ``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.gallery.sqlite_store import SqliteGalleryStore
from app.gallery.store import NewItem
from benchmarks import REPO_ROOT
from benchmarks.environment import OtherLoad, machine_description
from benchmarks.gallery_index_bench import (
    CELL_ZIP,
    LABELS,
    SEED_BATCH,
    SPACE,
    label_numbers,
    mixture,
    synthetic_digest,
    tiny_png,
)
from benchmarks.servers import WorkersServer, tree_cpu_seconds
from benchmarks.wrk import run_wrk, write_script, wrk_missing
from contract.arguments import positive_int
from contract.layout import AUTOENCODER, METADATA_FILE

SEARCH_CONNECTIONS = (1, 4, 32)
FILTERS = (None, "five", "half")  # the 5% label, the 50% label
REENCODE_CONNECTIONS = 8
BATCH = 64
# No search for longer than app.gallery.service.BUSY_WINDOW_S (1 s; not imported, which
# would load TensorFlow into the load generator): the re-encoding stops pacing itself.
IDLE_WAIT_S = 2.0
PROGRESS_READINGS = 6  # /readyz answers read for the re-encoding's progress
READY_TIMEOUT_S = 900.0  # a worker builds its index from a million rows before it is ready


def cell_pngs(data: Path, count: int, skip: int = 0) -> list[bytes]:
    """``count`` distinct malaria cell PNGs, after the first ``skip``."""
    with zipfile.ZipFile(data / CELL_ZIP) as archive:
        names = sorted(name for name in archive.namelist() if name.endswith(".png"))
        if skip + count > len(names):
            raise SystemExit(f"{data / CELL_ZIP} holds {len(names)} cells, not {skip + count}")
        return [archive.read(name) for name in names[skip : skip + count]]


def seeded_gallery(directory: Path, size: int) -> dict[str, Any]:
    """A gallery of ``size`` synthetic items written through the store API, as ``added``
    items: the server seeds the served offline index into it at start and then removes the
    ``offline`` items that index does not hold, so synthetic offline items would be gone
    (and searched no more) before the first request."""
    codes = mixture(size, seed=1)
    numbers = label_numbers(size, seed=2)
    names = list(LABELS)
    png = tiny_png()
    store = SqliteGalleryStore(directory)
    try:
        store.open_space(SPACE)
        began = time.perf_counter()
        for start in range(0, size, SEED_BATCH):
            stop = min(size, start + SEED_BATCH)
            items = [
                NewItem(png, synthetic_digest(n), names[numbers[n]], source="added")
                for n in range(start, stop)
            ]
            store.add(items, codes[start:stop], SPACE)
        seed_s = time.perf_counter() - began
        store.activate(SPACE)
    finally:
        store.close()
    return {"seed_s": seed_s, "seed_items_per_s": size / seed_s}


def check_served_size(server: WorkersServer, size: int) -> int:
    """How many items the server's gallery holds (its synthetic ones and the offline index's
    cells); stops the benchmark when fewer than the ``size`` written, as a gallery the server
    emptied would make every figure meaningless."""
    gallery = httpx.get(server.base_url + "/readyz", timeout=10).json().get("gallery") or {}
    items = int(gallery.get("items") or 0)
    if items < size:
        raise RuntimeError(f"the server's gallery holds {items} items, not the {size} written")
    return items


def started_server(models: Path, gallery: Path, workers: int, log: Path) -> WorkersServer:
    server = WorkersServer(models, workers, log)
    server.env |= {"GALLERY_DIR": str(gallery)}
    server.ready_timeout_s = READY_TIMEOUT_S
    return server


def machine_busy_s() -> float:
    """CPU seconds every core has spent busy since boot (Linux ``/proc/stat``)."""
    with open("/proc/stat", encoding="utf-8") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def measured_wrk(
    server: WorkersServer, url: str, script: Path, duration_s: float, connections: int
) -> dict[str, Any]:
    """One wrk run, with the server's CPU per request (every worker, every thread: the
    work a request costs, whatever else the machine runs) and the cores other processes
    used meanwhile (neither the server, wrk nor this process)."""
    began = time.perf_counter()
    busy, served, own = machine_busy_s(), tree_cpu_seconds(server.pid), own_cpu_s()
    result = run_wrk(url, script, duration_s, connections=connections)
    wall = time.perf_counter() - began
    served = tree_cpu_seconds(server.pid) - served
    others = machine_busy_s() - busy - served - result["wrk_cpu_s"] - (own_cpu_s() - own)
    return {
        **result,
        "server_core_ms": 1000 * served / max(result["requests"], 1),
        "other_cores": max(others, 0.0) / wall,
    }


def search_rows(server: WorkersServer, query: bytes, work: Path, duration_s: float) -> list[dict]:
    script = write_script(work, "similar", query, {"Content-Type": "image/png"})
    rows = []
    for label in FILTERS:
        url = f"{server.base_url}/similar?k=10" + (f"&label={label}" if label else "")
        run_wrk(url, script, 2, connections=4)  # warm every worker's batcher and index
        for connections in SEARCH_CONNECTIONS:
            result = measured_wrk(server, url, script, duration_s, connections)
            rows.append({"label": label or "(none)", "connections": connections, **result})
    return rows


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def addition_rows(server: WorkersServer, cells: list[bytes], singles: int) -> dict[str, Any]:
    url = server.base_url + "/gallery"
    latencies = []
    cpu_before, began = own_cpu_s(), time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for cell in cells[:singles]:
            started = time.perf_counter()
            answer = client.post(url, files=_parts([cell]), data={"label": "added"})
            latencies.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 201:
                raise RuntimeError(f"POST /gallery answered {answer.status_code}: {answer.text}")
    single_wall = time.perf_counter() - began
    single_cpu = own_cpu_s() - cpu_before
    batches = [cells[start : start + BATCH] for start in range(singles, len(cells), BATCH)]
    created = [0, 0]

    def send(part: int) -> None:
        # A connection per batch, as ``cellsign gallery add`` makes one: the workers take
        # connections, so two kept-alive ones may both land on one worker and leave the
        # other idle.
        for batch in batches[part::2]:
            answer = httpx.post(url, files=_parts(batch), data={"label": "added"}, timeout=120)
            if answer.status_code != 201:
                raise RuntimeError(f"POST /gallery answered {answer.status_code}: {answer.text}")
            created[part] += sum(item["created_now"] for item in answer.json()["items"])

    cpu_before, began = own_cpu_s(), time.perf_counter()
    threads = [threading.Thread(target=send, args=(part,)) for part in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batch_wall = time.perf_counter() - began
    return {
        "singles": singles,
        "single_p50_ms": statistics.median(latencies),
        "single_p99_ms": float(np.percentile(latencies, 99)),
        "single_generator_cpu_share": single_cpu / single_wall,
        "batched_items": sum(created),
        "batched_items_per_s": sum(created) / batch_wall,
        "batched_generator_cpu_share": (own_cpu_s() - cpu_before) / batch_wall,
    }


def _parts(cells: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"cell{n}.png", cell, "image/png")) for n, cell in enumerate(cells)]


def add_as_new_version(models: Path) -> int:
    """Copy the newest autoencoder version under the next number (its metadata renumbered):
    a "new encoder" the server loads on reload."""
    root = models / AUTOENCODER
    newest = max(int(path.name) for path in root.iterdir() if path.name.isdigit())
    target = root / str(newest + 1)
    shutil.copytree(root / str(newest), target)
    metadata = json.loads((target / METADATA_FILE).read_text())
    (target / METADATA_FILE).write_text(json.dumps({**metadata, "version": newest + 1}))
    return newest + 1


def reencoding_row(
    models: Path, work: Path, size: int, query: bytes, workers: int, duration_s: float
) -> dict[str, Any]:
    """/similar before and while the gallery re-encodes, then the re-encoding alone (no
    searches: unpaced) to learn its CPU per item. The req/s ratio moves with the machine's
    other load; the share of the server's CPU the re-encoding took while searches ran
    (items re-encoded then, times its CPU per item) does not, and is what a saturated
    server loses."""
    own_models = work / "reencode-models"
    shutil.copytree(models, own_models)
    gallery = work / "reencode-gallery"
    seeded_gallery(gallery, size)
    script = write_script(work, "reencode-similar", query, {"Content-Type": "image/png"})
    server = started_server(own_models, gallery, workers, work / "reencode.log")
    with server:
        url = f"{server.base_url}/similar?k=10"
        run_wrk(url, script, 2, connections=REENCODE_CONNECTIONS)
        before = measured_wrk(server, url, script, duration_s, REENCODE_CONNECTIONS)
        target = add_as_new_version(own_models)
        httpx.post(server.base_url + "/admin/reload", timeout=120).raise_for_status()
        done_before = _reencoded(server, target)
        during = measured_wrk(server, url, script, duration_s, REENCODE_CONNECTIONS)
        done_during = _reencoded(server, target)
        time.sleep(IDLE_WAIT_S)
        idle_began, idle_cpu = time.perf_counter(), tree_cpu_seconds(server.pid)
        idle_done = _reencoded(server, target)
        time.sleep(duration_s)
        idle_cpu = tree_cpu_seconds(server.pid) - idle_cpu
        idle_items = _reencoded(server, target) - idle_done
        idle_s = time.perf_counter() - idle_began
    reencoded = done_during - done_before
    cpu_per_item = idle_cpu / max(idle_items, 1)
    during_cpu = during["server_core_ms"] * during["requests"] / 1000
    return {
        "size": size,
        "before_rps": before["rps"],
        "during_rps": during["rps"],
        "ratio": during["rps"] / before["rps"],
        "before_core_ms": before["server_core_ms"],
        "during_core_ms": during["server_core_ms"],
        "before_other_cores": before["other_cores"],
        "during_other_cores": during["other_cores"],
        "before_p99_ms": before["p99_ms"],
        "during_p99_ms": during["p99_ms"],
        "reencoded_during": reencoded,
        "idle_items_per_s": idle_items / idle_s,
        "cpu_ms_per_item": 1000 * cpu_per_item,
        "reencode_share": reencoded * cpu_per_item / during_cpu,
        "done": done_during + idle_items,
        "wrk_cpu_s": before["wrk_cpu_s"] + during["wrk_cpu_s"],
    }


def _reencoded(server: WorkersServer, target: int) -> int:
    """How many items have their code of encoder ``target`` so far: the most advanced of a
    few /readyz answers, as each worker answers with its own view and the one re-encoding
    knows it best."""
    deadline = time.monotonic() + 60
    readings: list[int] = []
    while len(readings) < PROGRESS_READINGS:
        if time.monotonic() > deadline:
            raise RuntimeError("the re-encoding never started")
        gallery = httpx.get(server.base_url + "/readyz", timeout=10).json().get("gallery") or {}
        progress = gallery.get("reencoding")
        if gallery.get("encoder_version") == target:
            raise RuntimeError("the re-encoding finished: use a larger --reencode-size")
        if progress and progress["encoder_version"] == target:
            readings.append(int(progress["done"]))
        else:
            time.sleep(0.1)
    return max(readings)


def run(arguments: argparse.Namespace, work: Path) -> dict[str, Any]:
    cells = cell_pngs(arguments.data, arguments.singles + arguments.batched + 1)
    query, cells = cells[0], cells[1:]
    results: dict[str, Any] = {"machine": machine_description()}
    gallery = work / "gallery"
    results["seed"] = seeded_gallery(gallery, arguments.size)
    server = started_server(arguments.models, gallery, arguments.workers, work / "search.log")
    with OtherLoad() as load:
        began = time.perf_counter()
        with server:
            results["ready_s"] = time.perf_counter() - began
            check_served_size(server, arguments.size)
            results["search"] = search_rows(server, query, work, arguments.duration)
            results["served_items"] = check_served_size(server, arguments.size)
            results["additions"] = addition_rows(server, cells, arguments.singles)
        results["reencoding"] = reencoding_row(
            arguments.models,
            work,
            arguments.reencode_size,
            query,
            arguments.workers,
            arguments.duration,
        )
    results["load"] = load.summary()
    return results


def markdown(results: dict[str, Any], arguments: argparse.Namespace, command: str) -> str:
    machine, load = results["machine"], results["load"]
    lines = [
        "# The living gallery over HTTP (embedded store)",
        "",
        f"`{command}` at {machine['date_utc']}, code {machine['git']}: {machine['processor']}, "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, "
        f"{', '.join(f'{k} {v}' for k, v in machine['versions'].items())}; "
        f"{arguments.workers} workers; other processes used {load['other_processes_cores']} "
        f"cores on average over {load['wall_s']} s.",
        "",
        f"Gallery of {arguments.size:,} synthetic 64-d codes (clustered, labels 50/30/15/5%), "
        f"written through the store in {results['seed']['seed_s']:.0f} s; the server was ready "
        f"(every worker's index built) {results['ready_s']:.0f} s after it started; it searched "
        f"{results['served_items']:,} items (the offline index's cells, seeded by the server "
        "at start, included).",
        "",
        "## /similar (one real cell, k=10; wrk, its CPU beside each figure)",
        "",
        "Server core-ms per request: the CPU every worker process spent (all threads: "
        "TensorFlow, FAISS, the event loop) divided by the requests answered. Other cores: what "
        "processes other than the server, wrk and the benchmark used during the run.",
        "",
        "| label filter | connections | req/s | p50 ms | p99 ms | non-2xx | server core-ms/req "
        "| other cores | wrk CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["search"]:
        lines.append(
            f"| {row['label']} | {row['connections']} | {row['rps']:.0f} | {row['p50_ms']:.1f} "
            f"| {row['p99_ms']:.1f} | {row['failed']} | {row['server_core_ms']:.1f} "
            f"| {row['other_cores']:.2f} | {row['wrk_cpu_s']:.2f} |"
        )
    add = results["additions"]
    lines += [
        "",
        "## POST /gallery (distinct real cells; a Python generator, its CPU share beside)",
        "",
        f"- One cell per request, one client, {add['singles']} requests: p50 "
        f"{add['single_p50_ms']:.1f} ms, p99 {add['single_p99_ms']:.1f} ms (generator "
        f"{add['single_generator_cpu_share']:.0%} of a core).",
        f"- Batches of {BATCH}, two clients: {add['batched_items_per_s']:.0f} items/s over "
        f"{add['batched_items']} new items (generator {add['batched_generator_cpu_share']:.0%} "
        "of a core).",
    ]
    row = results["reencoding"]
    lines += [
        "",
        "## /similar while the gallery re-encodes",
        "",
        f"Gallery of {row['size']:,} items, wrk with {REENCODE_CONNECTIONS} connections, "
        f"{arguments.duration:g} s each:",
        "",
        f"- before: {row['before_rps']:.0f} req/s, p99 {row['before_p99_ms']:.0f} ms, "
        f"{row['before_core_ms']:.1f} server core-ms per request (other processes "
        f"{row['before_other_cores']:.2f} cores);",
        f"- while re-encoding: {row['during_rps']:.0f} req/s (ratio {row['ratio']:.2f}), p99 "
        f"{row['during_p99_ms']:.0f} ms, {row['during_core_ms']:.1f} server core-ms per request "
        f"(other processes {row['during_other_cores']:.2f} cores); "
        f"{row['reencoded_during']} items re-encoded meanwhile;",
        f"- re-encoding alone (no searches, so unpaced): {row['idle_items_per_s']:.0f} items/s "
        f"at {row['cpu_ms_per_item']:.1f} server core-ms per item; {row['done']:,} items "
        "re-encoded by the end.",
        "",
        f"While searches ran, the re-encoding took {row['reencode_share']:.1%} of the server's "
        "CPU (items re-encoded then, times its CPU per item): what a saturated server loses "
        "to it. The req/s ratio also moves with the machine's other load between the runs.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="a trained MODEL_DIR")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--size", type=positive_int, default=1_000_000)
    parser.add_argument("--reencode-size", type=positive_int, default=100_000)
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--singles", type=positive_int, default=200)
    parser.add_argument("--batched", type=positive_int, default=3200)
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "gallery_http_results.md"
    )
    arguments = parser.parse_args(argv)
    if wrk_missing():
        return 1
    with tempfile.TemporaryDirectory(prefix="gallery-http-") as work:
        results = run(arguments, Path(work))
    command = "python -m benchmarks.gallery_http_bench " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    report = markdown(results, arguments, command)
    arguments.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
