"""The Milvus gallery benchmark runs end to end against a real Milvus server on a small
gallery, reports every row, and leaves none of its collections behind."""

from __future__ import annotations

from pathlib import Path

from pymilvus import MilvusClient

from benchmarks import gallery_milvus_bench
from tests.app.gallery.milvus_server import shared_server


def test_a_small_run_reports_every_row_and_drops_its_collections(tmp_path: Path) -> None:
    milvus = shared_server()  # skips, saying why, where no server can start; stopped at exit
    out = tmp_path / "milvus.md"
    url = f"milvus://127.0.0.1:{milvus.port}"
    argv = ["--url", url, "--pid", str(milvus.process.pid), "--size", "3000", "--out", str(out)]
    argv += ["--queries", "20", "--singles", "3", "--batches", "1"]
    assert gallery_milvus_bench.main(argv) == 0
    report = out.read_text()
    search_rows = [line for line in report.splitlines() if "| HNSW" in line]
    assert len(search_rows) == 1 + len(gallery_milvus_bench.LABELS), report
    assert "| single | 3 |" in report and "| batch of 64 | 1 |" in report, report
    assert "the Milvus server used" in report
    client = MilvusClient(uri=f"http://127.0.0.1:{milvus.port}")
    assert not [name for name in client.list_collections() if name.startswith("bench")]
