"""FAISS: exact (Flat) against IVF and HNSW, at the real gallery size and at a large
synthetic size of the same code dimension.

Real codes are read back from the exported index when it can reconstruct them (flat and
HNSW-flat can); otherwise, and for the large size, codes are drawn from a Gaussian mixture
(clustered like real codes, unlike uniform noise, which no index can prune). Queries are
held out of the database; recall@10 is measured against the exact index.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.model_bench import newest_version
from benchmarks.servers import rss_mib
from contract.layout import INDEX, INDEX_FILE, METADATA_FILE
from training.malaria.index import HNSW_EF_SEARCH, HNSW_NEIGHBOURS  # what the index command builds

K = 10
MIXTURE_CENTRES = 1024
IVF_NPROBE = 16
ADD_CHUNK = 50_000


def real_gallery(models: Path) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The exported index's codes (or None when they cannot be reconstructed) and metadata."""
    folder = newest_version(models, INDEX)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    index = faiss.read_index(str(folder / INDEX_FILE))
    try:
        codes = index.reconstruct_n(0, index.ntotal)
    except RuntimeError:
        codes = None
    return codes, metadata


def mixture_codes(count: int, dimension: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(MIXTURE_CENTRES, dimension)).astype(np.float32)
    codes = np.empty((count, dimension), np.float32)
    for start in range(0, count, 100_000):  # chunks keep the temporary arrays small
        stop = min(count, start + 100_000)
        picks = rng.integers(0, MIXTURE_CENTRES, stop - start)
        noise = rng.normal(scale=0.5, size=(stop - start, dimension)).astype(np.float32)
        codes[start:stop] = centres[picks] + noise
    return codes


def _metric(metadata: dict[str, Any]) -> int:
    metric = str(metadata.get("metric", "l2")).lower()
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def _build(kind: str, codes: np.ndarray, metric: int, budget_s: float) -> tuple[Any, dict]:
    dimension, count = codes.shape[1], len(codes)
    params: dict[str, Any] = {}
    index: faiss.Index
    if kind == "Flat":
        index = faiss.IndexFlat(dimension, metric)
    elif kind == "IVF":
        lists = max(1, min(round(np.sqrt(count)), count // 40))  # FAISS wants >= 39 per list
        ivf = faiss.IndexIVFFlat(faiss.IndexFlat(dimension, metric), dimension, lists, metric)
        ivf.train(codes[: min(count, lists * 64)])
        ivf.nprobe = min(IVF_NPROBE, lists)
        params = {"nlist": lists, "nprobe": ivf.nprobe}
        index = ivf
    else:
        hnsw = faiss.IndexHNSWFlat(dimension, HNSW_NEIGHBOURS, metric)
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        params = {
            "M": HNSW_NEIGHBOURS,
            "efConstruction": hnsw.hnsw.efConstruction,
            "efSearch": HNSW_EF_SEARCH,
        }
        index = hnsw
    start = time.perf_counter()
    for chunk_start in range(0, count, ADD_CHUNK):  # chunked so a slow build can stop early
        index.add(codes[chunk_start : chunk_start + ADD_CHUNK])
        if time.perf_counter() - start > budget_s and index.ntotal < count:
            params["stopped_early"] = f"build budget of {budget_s:.0f} s reached"
            break
    return index, params


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(row) & set(truth)) for row, truth in zip(found, exact, strict=True)]
    return float(np.mean(hits)) / K


def compare_indexes(
    codes: np.ndarray, queries: np.ndarray, metric: int, label: str, budget_s: float
) -> list[dict[str, Any]]:
    """Build each index kind over ``codes`` and time single-query searches of ``queries``."""
    if metric == faiss.METRIC_INNER_PRODUCT:  # cosine: the product normalises its codes
        faiss.normalize_L2(codes)
        faiss.normalize_L2(queries)
    rows, exact = [], None
    for kind in ("Flat", "IVF", "HNSW"):
        rss_before, start = rss_mib_self(), time.perf_counter()
        index, params = _build(kind, codes, metric, budget_s)
        build_s = time.perf_counter() - start
        rss_delta = rss_mib_self() - rss_before
        latencies, found = _single_queries(index, queries)
        if exact is None:
            exact = np.array(found)
        size = index.ntotal
        truth = _exact_for(exact, size, codes, queries, metric)
        rows.append(
            {
                "data": label,
                "index": kind,
                "size": size,
                "dimension": codes.shape[1],
                "build_s": round(build_s, 2),
                "index_mib": round(faiss.serialize_index(index).nbytes / 2**20, 1),
                "rss_delta_mib": round(rss_delta, 1),
                "query_p50_ms": round(float(np.percentile(latencies, 50)), 3),
                "query_p99_ms": round(float(np.percentile(latencies, 99)), 3),
                "recall_at_10": round(_recall(np.array(found), truth), 3),
                "queries": len(queries),
                "params": params,
            }
        )
        del index
    return rows


def _single_queries(index: Any, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    """One query per call, on one OpenMP thread: a server answers concurrent requests, and
    on a busy machine OpenMP's barrier across threads is what dominates a query's tail."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    latencies, found = [], []
    try:
        for query in queries:
            start = time.perf_counter()
            _, ids = index.search(query[np.newaxis], K)
            latencies.append((time.perf_counter() - start) * 1000)
            found.append(ids[0])
    finally:
        faiss.omp_set_num_threads(threads)
    return latencies, found


def _exact_for(
    exact: np.ndarray, size: int, codes: np.ndarray, queries: np.ndarray, metric: int
) -> np.ndarray:
    """Exact neighbours among the first ``size`` codes (a build stopped early holds fewer)."""
    if size == len(codes):
        return exact
    flat = faiss.IndexFlat(codes.shape[1], metric)
    flat.add(codes[:size])
    return flat.search(queries, K)[1]


def rss_mib_self() -> float:
    return rss_mib(os.getpid())


def faiss_benchmarks(
    models: Path, large_size: int, queries: int, budget_s: float
) -> dict[str, Any]:
    codes, metadata = real_gallery(models)
    dimension = int(metadata["dimension"])
    size = int(metadata.get("size", len(codes) if codes is not None else 0))
    metric = _metric(metadata)
    source = "exported index codes"
    if codes is None:
        codes = mixture_codes(size, dimension, seed=1)
        source = "Gaussian mixture (the index cannot reconstruct its codes)"
    rng = np.random.default_rng(0)
    order = rng.permutation(len(codes))
    held_out = min(queries, len(codes) // 10)
    real_rows = compare_indexes(
        codes[order[held_out:]].copy(), codes[order[:held_out]].copy(), metric, "real", budget_s
    )
    large_queries = max(10, queries // 2)  # a flat search of 1M codes is slow: fewer queries
    synthetic = mixture_codes(large_size + large_queries, dimension, seed=2)
    large_rows = compare_indexes(
        synthetic[large_queries:], synthetic[:large_queries], metric, "synthetic", budget_s
    )
    return {
        "metric": metadata.get("metric"),
        "real_gallery_size": size,
        "real_codes_source": source,
        "rows": real_rows + large_rows,
    }
