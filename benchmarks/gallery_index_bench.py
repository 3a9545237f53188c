"""``python -m benchmarks.gallery_index_bench [--size N] [--queries Q] [--out FILE] [--quick]``:
the embedded gallery store (``app/gallery/sqlite_store.py`` + ``code_index.py``) at a
million codes.

1. ``--size`` synthetic 64-d codes from a mixture of 1,024 Gaussians (centres N(0, 1), each
   cluster's spread drawn from 0.8-1.6: overlapping clusters, harder for an IVF than
   ``faiss_bench``'s spread of 0.5, where IVF reached recall 1.000 at 16 probes), with
   labels drawn independently of the codes (the hardest case for a filtered search: a
   label's cells are spread over every cluster): 50%, 30%, 15% and 5% of the cells.
   Queries are held-out draws of the same mixture.
2. Seeding: the cells go through ``store.add`` in batches of 2,000 into an open space,
   which is then activated (as the gallery service seeds from the offline index). Each cell
   carries the same tiny PNG (the image table's size does not change how the index is
   built); the digests differ.
3. Worker start: a fresh interpreter opens the store (reads every code, builds the index):
   its wall time and memory. The index built from the arrays in memory, timed apart, says
   how much of it is SQLite.
4. Search: one query at a time through ``store.search`` on one OpenMP thread (the server's
   setting), p50/p99, and recall@10 against exact search over the same cells, without a
   filter and for each label.
5. Additions into the million-cell gallery, with real cell PNGs from the malaria data set
   when it is there (``--data``): single adds, then batches of 64: per add p50/p99 and
   items/s. Deletes: per delete p50. An idle ``refresh``: p50.

Writes a markdown report (``benchmarks/gallery_index_results.md`` by default) and prints it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from PIL import Image

from app.gallery import code_index
from app.gallery.code_index import CodeIndex
from app.gallery.sqlite_store import SqliteGalleryStore
from app.gallery.store import (
    CodeSpace,
    GalleryStore,
    NewItem,
    content_digest,
    id_of,
    normalised,
)
from benchmarks import REPO_ROOT
from benchmarks.environment import OtherLoad, machine_description
from benchmarks.report import markdown_rows, publish

DIMENSION = 64
CENTRES = 1024
SPREAD = (0.8, 1.6)
LABELS = {"half": 0.50, "thirty": 0.30, "fifteen": 0.15, "five": 0.05}
SEED_BATCH = 2000
K = 10
SPACE = CodeSpace(encoder_version=1, dimension=DIMENSION, metric="cosine")
CELL_ZIP = Path("malaria") / "cell_images.zip"

OPEN_SCRIPT = """
import json, os, sys, time
from pathlib import Path
t0 = time.perf_counter()
import faiss
faiss.omp_set_num_threads(1)
from app.gallery.sqlite_store import SqliteGalleryStore
from benchmarks.servers import rss_mib
imported = time.perf_counter()
rss_before = rss_mib(os.getpid())
store = SqliteGalleryStore(Path(sys.argv[1]))
opened = time.perf_counter()
print(json.dumps({
    "open_s": opened - imported,
    "rss_before_mib": rss_before,
    "rss_after_mib": rss_mib(os.getpid()),
    "peak_rss_mib": [int(line.split()[1]) / 1024 for line in open("/proc/self/status")
                     if line.startswith("VmHWM:")][0],
    "index": store.index_description(),
}))
"""


def mixture(count: int, seed: int) -> np.ndarray:
    """``count`` codes of the benchmark's mixture (the same centres for every ``seed``)."""
    centre_rng = np.random.default_rng(12345)
    centres = centre_rng.normal(size=(CENTRES, DIMENSION)).astype(np.float32)
    spreads = centre_rng.uniform(*SPREAD, CENTRES).astype(np.float32)
    rng = np.random.default_rng(seed)
    codes = np.empty((count, DIMENSION), np.float32)
    for start in range(0, count, 100_000):  # chunks keep the temporary arrays small
        stop = min(count, start + 100_000)
        picks = rng.integers(0, CENTRES, stop - start)
        noise = rng.normal(size=(stop - start, DIMENSION)).astype(np.float32)
        codes[start:stop] = centres[picks] + noise * spreads[picks, np.newaxis]
    return codes


def label_numbers(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(len(LABELS), count, p=list(LABELS.values())).astype(np.int32)


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_digest(number: int) -> bytes:
    return hashlib.sha256(b"gallery-bench:%d" % number).digest()


def seed_store(store: GalleryStore, codes: np.ndarray, numbers: np.ndarray) -> dict[str, Any]:
    """Write the cells through ``store.add`` into an open space, then activate it, as the
    gallery service seeds from the offline index."""
    names = list(LABELS)
    png = tiny_png()
    store.open_space(SPACE)
    started = time.perf_counter()
    for start in range(0, len(codes), SEED_BATCH):
        stop = min(len(codes), start + SEED_BATCH)
        items = [
            NewItem(png, synthetic_digest(n), names[numbers[n]], source="offline")
            for n in range(start, stop)
        ]
        store.add(items, codes[start:stop], SPACE)
    seeded = time.perf_counter()
    store.activate(SPACE)
    activated = time.perf_counter()
    return {
        "seed_s": seeded - started,
        "seed_items_per_s": len(codes) / (seeded - started),
        "activate_s": activated - seeded,
    }


def worker_start(directory: Path) -> dict[str, Any]:
    """A fresh interpreter opening the store, as a worker does when it starts."""
    done = subprocess.run(
        [sys.executable, "-c", OPEN_SCRIPT, str(directory)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"opening the store failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_in_memory(codes: np.ndarray, numbers: np.ndarray) -> dict[str, Any]:
    """``CodeIndex.build`` alone, on codes already in memory (no SQLite)."""
    ids = np.arange(len(codes), dtype=np.int64)
    started = time.perf_counter()
    index = CodeIndex.build(SPACE, ids, numbers, list(LABELS), codes)
    built = time.perf_counter() - started
    result = {"build_s": built, "lists": index.nlist, "nprobe": index.nprobe}
    del index
    return result


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def embedded_path(label: str | None, count: int, total: int) -> str:
    """How the embedded store searches ``count`` of ``total`` cells (``label`` None: all)."""
    if label is None:
        return "IVF" if total > code_index.EXACT_LIMIT else "exact (one list)"
    small = count <= max(code_index.LABEL_EXACT_LIMIT, code_index.LABEL_EXACT_SHARE * total)
    return "exact over the label's copy" if small else "IVF + label bitmap"


def search_rows(
    store: GalleryStore,
    codes: np.ndarray,
    ids: np.ndarray,
    numbers: np.ndarray,
    queries: np.ndarray,
    path: Callable[[str | None, int, int], str] = embedded_path,
) -> list[dict[str, Any]]:
    """Per filter (none, then each label): p50/p99 of ``store.search`` one query at a time,
    and recall@10 against exact search over the same cells; ``path`` names how the store
    searched them."""
    names = list(LABELS)
    rows = []
    for label in [None, *names]:
        chosen = np.ones(len(ids), bool) if label is None else numbers == names.index(label)
        share = float(chosen.mean())
        _, truth = faiss.knn(queries, codes[chosen], K, faiss.METRIC_L2)
        truth_ids = ids[chosen][truth]
        latencies, hits = [], 0
        for query, expected in zip(queries, truth_ids, strict=True):
            started = time.perf_counter()
            found = store.search(query, K, label)
            latencies.append((time.perf_counter() - started) * 1000)
            hits += len({n.id for n in found} & set(expected.tolist()))
        count = int(chosen.sum())
        rows.append(
            {
                "filter": label or "none",
                "share": share,
                "cells": count,
                "path": path(label, count, len(ids)),
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "recall_at_10": hits / (K * len(queries)),
            }
        )
    return rows


def real_cells(data: Path, count: int) -> list[tuple[bytes, bytes]]:
    """(PNG, digest) of up to ``count`` malaria cells, re-encoded as the gallery stores
    them; synthetic 96x96 cells where the data set is missing."""
    cells = []
    archive_path = data / CELL_ZIP
    if archive_path.is_file():
        with zipfile.ZipFile(archive_path) as archive:
            names = [name for name in archive.namelist() if name.endswith(".png")]
            for name in names[:count]:
                with Image.open(io.BytesIO(archive.read(name))) as opened:
                    cells.append(encoded(opened.convert("RGB")))
    rng = np.random.default_rng(7)
    while len(cells) < count:
        pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
        cells.append(encoded(Image.fromarray(pixels, "RGB")))
    return cells


def encoded(image: Image.Image) -> tuple[bytes, bytes]:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), content_digest(image.mode, image.size, image.tobytes())


def addition_rows(
    store: GalleryStore, cells: list[tuple[bytes, bytes]], singles: int, batches: int
) -> tuple[list[dict[str, Any]], list[int]]:
    codes = mixture(len(cells), seed=99)
    items = [NewItem(png, digest, "added label") for png, digest in cells]
    rows, added_ids = [], []
    plan = [("single", 1, singles), ("batch of 64", 64, batches)]
    position = 0
    for name, size, repeats in plan:
        latencies = []
        started = time.perf_counter()
        for _ in range(repeats):
            chunk = slice(position, position + size)
            position += size
            began = time.perf_counter()
            results = store.add(items[chunk], codes[chunk], SPACE)
            latencies.append((time.perf_counter() - began) * 1000)
            added_ids += [result.item.id for result in results if result.created]
        elapsed = time.perf_counter() - started
        rows.append(
            {
                "add": name,
                "adds": repeats,
                "items_per_s": size * repeats / elapsed,
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
            }
        )
    return rows, added_ids


def delete_and_refresh(store: SqliteGalleryStore, ids: list[int]) -> dict[str, float]:
    deletes = []
    for item_id in ids:
        started = time.perf_counter()
        store.delete(item_id)
        deletes.append((time.perf_counter() - started) * 1000)
    refreshes = []
    for _ in range(200):
        started = time.perf_counter()
        store.refresh()
        refreshes.append((time.perf_counter() - started) * 1000)
    return {
        "delete_p50_ms": percentile(deletes, 50),
        "delete_p99_ms": percentile(deletes, 99),
        "deletes": len(deletes),
        "idle_refresh_p50_ms": percentile(refreshes, 50),
    }


def run(size: int, queries: int, singles: int, batches: int, data: Path, workdir: Path) -> dict:
    faiss.omp_set_num_threads(1)  # as app/core/index.py sets it for the server
    results: dict[str, Any] = {"machine": machine_description(), "size": size}
    results["queries"] = queries
    results["sqlite"] = sqlite3.sqlite_version
    started = time.perf_counter()
    codes = mixture(size, seed=1)
    numbers = label_numbers(size, seed=2)
    query_codes = normalised(mixture(queries, seed=3), "cosine")
    results["generate_s"] = time.perf_counter() - started
    directory = workdir / "gallery"
    with OtherLoad() as load:
        seeding = SqliteGalleryStore(directory)
        results["seeding"] = seed_store(seeding, codes, numbers)
        seeding.close()
    results["seeding_load"] = load.summary()
    results["database_mib"] = (
        sum(path.stat().st_size for path in directory.iterdir() if path.is_file()) / 2**20
    )
    with OtherLoad() as load:
        results["worker_start"] = worker_start(directory)
    results["worker_start_load"] = load.summary()
    stored = normalised(codes, "cosine")
    del codes
    results["in_memory_build"] = build_in_memory(stored, numbers)
    store = SqliteGalleryStore(directory)
    # The ids the cells asked for: probing moves one only when 53 bits collide (about one
    # chance in 20,000 at a million cells), which would show as a recall a millionth lower.
    ids = np.array([id_of(synthetic_digest(n)) for n in range(size)], np.int64)
    with OtherLoad() as load:
        results["search"] = search_rows(store, stored, ids, numbers, query_codes)
    results["search_load"] = load.summary()
    cells = real_cells(data, singles + 64 * batches)
    results["cells"] = "malaria data set" if (data / CELL_ZIP).is_file() else "synthetic"
    results["cell_png_kib"] = float(np.mean([len(png) for png, _ in cells])) / 1024
    with OtherLoad() as load:
        results["additions"], added = addition_rows(store, cells, singles, batches)
        results["deletes"] = delete_and_refresh(store, added[: min(100, len(added))])
    results["additions_load"] = load.summary()
    results["index"] = store.index_description()
    store.close()
    return results


def search_table(rows: list[dict[str, Any]]) -> list[str]:
    """``search_rows``' rows as a markdown table (this benchmark's and the Milvus one's)."""
    return [
        "| filter | share | cells | path | p50 ms | p99 ms | recall@10 |",
        "|---|---:|---:|---|---:|---:|---:|",
        *markdown_rows(
            "| {filter} | {share:.0%} | {cells:,} | {path} | {p50_ms:.2f} | {p99_ms:.2f} | "
            "{recall_at_10:.3f} |",
            rows,
        ),
    ]


def addition_table(rows: list[dict[str, Any]]) -> list[str]:
    """``addition_rows``' rows as a markdown table."""
    return [
        "| add | adds | items/s | p50 ms per add | p99 ms per add |",
        "|---|---:|---:|---:|---:|",
        *markdown_rows(
            "| {add} | {adds} | {items_per_s:,.0f} | {p50_ms:.1f} | {p99_ms:.1f} |", rows
        ),
    ]


def markdown(results: dict[str, Any], command: str) -> str:
    machine = results["machine"]
    versions = machine["versions"]
    seeding, start, build = results["seeding"], results["worker_start"], results["in_memory_build"]
    index = results["index"]
    deletes = results["deletes"]
    lines = [
        "# Embedded gallery store at a million codes",
        "",
        f"`{command}` on {machine['date_utc']}: {machine['processor']}, "
        f"{machine['cpu_count']} CPUs, {machine['memory_gib']} GiB; Python {machine['python']}, "
        f"faiss-cpu {versions['faiss-cpu']}, numpy {versions['numpy']}, SQLite "
        f"{results['sqlite']}; load average at start "
        f"{', '.join(f'{v:.1f}' for v in machine['load_average_at_start'])}; "
        f"{machine['git']}.",
        "",
        f"Data: {results['size']:,} synthetic {DIMENSION}-d codes from a mixture of {CENTRES} "
        f"Gaussians (centres N(0, 1), cluster spreads {SPREAD[0]}-{SPREAD[1]}: overlapping "
        "clusters, not uniform noise), cosine metric; labels drawn independently of the "
        "codes: " + ", ".join(f"{name} {share:.0%}" for name, share in LABELS.items()) + ". "
        "Queries: held-out draws of the same mixture. One OpenMP thread (the server's setting).",
        "",
        "Issue #26's targets: search p50 <= 20 ms and p99 <= 60 ms through HTTP (so about "
        "10 ms in-process), recall@10 >= 0.95 with and without a label filter; additions "
        ">= 500 items/s through POST /gallery in batches, a single addition <= 50 ms p50. "
        "The machine is shared: the cores other processes used during each part are given.",
        "",
        "## Building",
        "",
        "| step | time | memory |",
        "|---|---:|---:|",
        f"| seeding: `store.add` in batches of {SEED_BATCH:,} into an open space | "
        f"{seeding['seed_s']:.1f} s ({seeding['seed_items_per_s']:,.0f} items/s) | |",
        f"| `activate` (builds this process's index from the table) | "
        f"{seeding['activate_s']:.1f} s | |",
        f"| worker start: a fresh process opens the store (reads every code, builds) | "
        f"{start['open_s']:.1f} s | RSS {start['rss_before_mib']:.0f} -> "
        f"{start['rss_after_mib']:.0f} MiB, peak {start['peak_rss_mib']:.0f} MiB |",
        f"| of which `CodeIndex.build` on codes in memory (train, add, calibrate) | "
        f"{build['build_s']:.1f} s | |",
        "",
        f"Index: {index.get('codes', 0):,} codes, {index.get('lists')} lists, nprobe "
        f"{index.get('nprobe')} (calibrated at build). Database on disk: "
        f"{results['database_mib']:,.0f} MiB (tiny PNGs). Other processes used "
        f"{results['seeding_load']['other_processes_cores']} cores during seeding, "
        f"{results['worker_start_load']['other_processes_cores']} during the worker start. "
        "Seeding a million cells is slow because their ids and digests are random keys: "
        "each commit rewrites pages spread over four B-trees into the WAL; the real "
        "offline gallery is tens of thousands of cells.",
        "",
        "## Search (`store.search`, one query at a time, k = 10)",
        "",
        *search_table(results["search"]),
        "",
        f"{results['queries']} queries per row; other processes used "
        f"{results['search_load']['other_processes_cores']} cores meanwhile.",
        "",
        f"## Additions into the {results['size']:,}-cell gallery",
        "",
        f"Cells: {results['cells']} PNGs (mean {results['cell_png_kib']:.1f} KiB), each add one "
        "`BEGIN IMMEDIATE` transaction committed with `synchronous=FULL` (an fsync of the WAL), "
        "then this process's index brought up to date.",
        "",
        *addition_table(results["additions"]),
        "",
        f"Deletes: p50 {deletes['delete_p50_ms']:.1f} ms, p99 {deletes['delete_p99_ms']:.1f} ms "
        f"({deletes['deletes']} deletes; FAISS `remove_ids` scans every list). An idle "
        f"`refresh` (nothing new): p50 {deletes['idle_refresh_p50_ms']:.3f} ms. Other "
        f"processes used {results['additions_load']['other_processes_cores']} cores meanwhile.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gallery_index_bench", description=__doc__
    )
    parser.add_argument("--size", type=int, default=1_000_000, help="codes in the gallery")
    parser.add_argument("--queries", type=int, default=1000, help="queries per search row")
    parser.add_argument("--singles", type=int, default=300, help="single-cell adds")
    parser.add_argument("--batches", type=int, default=30, help="adds of 64 cells")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, help="where the gallery is written (a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/gallery_index_results.md"))
    parser.add_argument("--quick", action="store_true", help="60,000 codes, few queries (a test)")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.size, arguments.queries = 60_000, 50
        arguments.singles, arguments.batches = 20, 3
    command = "python -m benchmarks.gallery_index_bench " + " ".join(argv or sys.argv[1:])
    with tempfile.TemporaryDirectory(dir=arguments.workdir) as workdir:
        results = run(
            arguments.size,
            arguments.queries,
            arguments.singles,
            arguments.batches,
            arguments.data,
            Path(workdir),
        )
    publish(markdown(results, command.strip()), arguments.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
