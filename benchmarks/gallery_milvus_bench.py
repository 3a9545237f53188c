"""``python -m benchmarks.gallery_milvus_bench --url milvus://HOST:PORT [--size N] [--pid PID]``:
the gallery's Milvus store (``app/gallery/milvus_store.py``) on a real Milvus server, with
``gallery_index_bench``'s codes, labels, queries and additions, so that the two stores'
figures read side by side.

Start a Milvus first: ``docker compose --profile scale up -d milvus`` (the official
standalone image), or the PyPI server that ``scripts/install-milvus.sh`` installs
(``.venv-milvus/bin/milvus-server --data DIR --proxy-port 19530``, plus
``--extra-config <component>.ip=127.0.0.1`` for each component on a machine without a
routable address). ``--pid`` names the server's process, so that its CPU is reported beside
the figures; without it only the machine's other load is.

1. Seeding: ``--size`` cells through ``store.add`` in batches of 2,000 into an open space,
   then ``activate`` (the alias switch), then the time until the first search answers.
2. Search: one query at a time through ``store.search`` (HNSW, Session consistency, the
   store's orphan check included), p50/p99 and recall@10 against exact search, without a
   filter and for each label.
3. Additions of real malaria cells: single adds, then batches of 64.

The benchmark's collections (a fresh prefix) are dropped at the end. Writes
``benchmarks/gallery_milvus_results.md`` (or ``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.gallery.milvus_store import MilvusGalleryStore
from app.gallery.store import id_of, normalised
from benchmarks import REPO_ROOT
from benchmarks.environment import OtherLoad, machine_description, package_version
from benchmarks.gallery_index_bench import (
    CELL_ZIP,
    LABELS,
    SEED_BATCH,
    K,
    addition_rows,
    addition_table,
    label_numbers,
    mixture,
    real_cells,
    search_rows,
    search_table,
    seed_store,
    synthetic_digest,
)
from benchmarks.report import publish
from benchmarks.servers import tree_cpu_seconds
from contract.arguments import positive_int

FIRST_SEARCH_TIMEOUT_S = 600.0


class ServerCpu:
    """Cores the Milvus server process (and its children) used during a ``with`` block."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.cores: float | None = None

    def __enter__(self) -> ServerCpu:
        self._start = (time.monotonic(), self._cpu())
        return self

    def __exit__(self, *_: object) -> None:
        wall, cpu = time.monotonic() - self._start[0], self._cpu()
        if cpu is not None and self._start[1] is not None and wall > 0:
            self.cores = round((cpu - self._start[1]) / wall, 2)

    def _cpu(self) -> float | None:
        return None if self.pid is None else tree_cpu_seconds(self.pid)


def milvus_path(label: str | None, count: int, total: int) -> str:
    return "HNSW" if label is None else "HNSW + label filter"


def first_search_s(store: MilvusGalleryStore, query: np.ndarray) -> float:
    """Seconds until a search of the newly active space answers k hits (Milvus loads the
    collection and builds its index in the background)."""
    started = time.perf_counter()
    while len(store.search(query, K, None)) < K:
        if time.perf_counter() - started > FIRST_SEARCH_TIMEOUT_S:
            raise RuntimeError(f"no full answer within {FIRST_SEARCH_TIMEOUT_S:.0f} s")
        time.sleep(0.2)
    return time.perf_counter() - started


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine_description(), "size": arguments.size}
    results["queries"] = arguments.queries
    codes = mixture(arguments.size, seed=1)
    numbers = label_numbers(arguments.size, seed=2)
    query_codes = normalised(mixture(arguments.queries, seed=3), "cosine")
    prefix = f"bench{int(time.time())}"
    store = MilvusGalleryStore(f"{arguments.url.rstrip('/')}/{prefix}")
    try:
        with OtherLoad() as load, ServerCpu(arguments.pid) as server:
            results["seeding"] = seed_store(store, codes, numbers)
            results["seeding"]["first_search_s"] = first_search_s(store, query_codes[0])
        results["seeding_load"] = {**load.summary(), "server_cores": server.cores}
        ids = np.array([id_of(synthetic_digest(n)) for n in range(arguments.size)], np.int64)
        stored = normalised(codes, "cosine")
        with OtherLoad() as load, ServerCpu(arguments.pid) as server:
            results["search"] = search_rows(
                store, stored, ids, numbers, query_codes, path=milvus_path
            )
        results["search_load"] = {**load.summary(), "server_cores": server.cores}
        cells = real_cells(arguments.data, arguments.singles + 64 * arguments.batches)
        real = (arguments.data / CELL_ZIP).is_file()
        results["cells"] = "malaria data set" if real else "synthetic"
        with OtherLoad() as load, ServerCpu(arguments.pid) as server:
            results["additions"], _ = addition_rows(
                store, cells, arguments.singles, arguments.batches
            )
        results["additions_load"] = {**load.summary(), "server_cores": server.cores}
    finally:
        store.drop_everything()
        store.close()
    return results


def load_note(load: dict[str, Any]) -> str:
    server = load["server_cores"]
    others = load["other_processes_cores"]
    if server is None:
        return (
            f"processes other than the benchmark (the Milvus server among them) used {others} cores"
        )
    return f"the Milvus server used {server} cores; all processes but the benchmark, {others}"


def markdown(results: dict[str, Any], arguments: argparse.Namespace, command: str) -> str:
    machine = results["machine"]
    versions = machine["versions"]
    seeding = results["seeding"]
    lines = [
        "# The gallery's Milvus store",
        "",
        f"`{command}` on {machine['date_utc']}: {machine['processor']}, "
        f"{machine['cpu_count']} CPUs, {machine['memory_gib']} GiB; Python {machine['python']}, "
        f"pymilvus {package_version('pymilvus')}, numpy {versions['numpy']}; load average "
        f"at start {', '.join(f'{v:.1f}' for v in machine['load_average_at_start'])}; "
        f"{machine['git']}. Server: {arguments.server}, on the same machine.",
        "",
        f"Data as in `gallery_index_results.md`: {results['size']:,} synthetic 64-d codes "
        "(a mixture of Gaussians), cosine metric, labels "
        + ", ".join(f"{name} {share:.0%}" for name, share in LABELS.items())
        + ", drawn independently of the codes.",
        "",
        "## Seeding",
        "",
        f"`store.add` in batches of {SEED_BATCH:,}: {seeding['seed_s']:.1f} s "
        f"({seeding['seed_items_per_s']:,.0f} items/s); `activate` {seeding['activate_s']:.1f} s; "
        f"first full search answer {seeding['first_search_s']:.1f} s later. "
        f"Meanwhile {load_note(results['seeding_load'])}.",
        "",
        "## Search (`store.search`, one query at a time, k = 10)",
        "",
        *search_table(results["search"]),
        "",
        f"{results['queries']} queries per row; {load_note(results['search_load'])}.",
        "",
        "## Additions",
        "",
        f"Cells: {results['cells']} PNGs. An add writes the images, the codes, the label "
        "registry and last the item rows (the commit point).",
        "",
        *addition_table(results["additions"]),
        "",
        f"Meanwhile {load_note(results['additions_load'])}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gallery_milvus_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--url", required=True, help="milvus://HOST:PORT of a running server")
    parser.add_argument("--pid", type=positive_int, help="the server's process, for its CPU")
    parser.add_argument(
        "--server", default="Milvus 2.3.5 standalone (PyPI `milvus`)", help="for the report"
    )
    parser.add_argument("--size", type=positive_int, default=200_000, help="codes in the gallery")
    parser.add_argument("--queries", type=positive_int, default=500, help="queries per row")
    parser.add_argument("--singles", type=positive_int, default=100, help="single-cell adds")
    parser.add_argument("--batches", type=positive_int, default=10, help="adds of 64 cells")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "gallery_milvus_results.md"
    )
    arguments = parser.parse_args(argv)
    command = "python -m benchmarks.gallery_milvus_bench " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    publish(markdown(run(arguments), arguments, command), arguments.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
