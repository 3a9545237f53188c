"""HTTP measurements: the product endpoints, the no-op ceiling, the naive baseline, several
images per request, and memory under a fixed request count and a soak.

Every server is a real ``uvicorn`` subprocess on 127.0.0.1 and every load comes from
:mod:`benchmarks.loadgen` in its own process; servers run one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loadgen import LoadSpec, run_load
from benchmarks.payloads import malaria_images, multipart_body, signs_images, write_requests
from benchmarks.servers import UvicornServer, rss_mib
from benchmarks.stub_model import stub_models_folder

PAIRED_ROUNDS = 2
SINGLE_UPLOADS = 16  # distinct images cycled through, so no response is a repeat of the last
BATCH_UPLOADS = 4


@dataclass(frozen=True)
class HttpPlan:
    """How long and how hard: the full run and ``--quick`` differ only here."""

    duration_s: float
    warmup_s: float
    concurrencies: tuple[int, ...]
    batch_concurrencies: tuple[int, ...]
    files_per_batch: int
    memory_requests: int
    soak_s: float
    max_requests_per_cell: int


@dataclass(frozen=True)
class Uploads:
    signs: list[bytes]
    malaria: list[bytes]

    @classmethod
    def from_data(cls, data_dir: Path, files_per_batch: int) -> Uploads:
        count = max(SINGLE_UPLOADS, files_per_batch * BATCH_UPLOADS)
        return cls(signs_images(data_dir, count), malaria_images(data_dir, SINGLE_UPLOADS))

    def singles(self, endpoint: str) -> list[list[bytes]]:
        images = self.signs if endpoint in ("classify", "noop") else self.malaria
        return [[image] for image in images[:SINGLE_UPLOADS]]

    def batches(self, files: int) -> list[list[bytes]]:
        return [self.signs[i * files : (i + 1) * files] for i in range(BATCH_UPLOADS)]


PATHS = {"classify": "/classify", "denoise": "/denoise", "similar": "/similar?k=5", "noop": "/noop"}
PRODUCT_ENDPOINTS = ("classify", "denoise", "similar")
BATCH_METRIC = "cellsign_batch_size"  # the app's micro-batch histogram (app/api/metrics.py)


class Bench:
    """One running server plus the request files written for its port."""

    def __init__(self, server: UvicornServer, plan: HttpPlan, uploads: Uploads, work: Path):
        self.server = server
        self.plan = plan
        self.uploads = uploads
        self.work = work

    def requests(self, endpoint: str, files_per_request: int = 1) -> list[str]:
        uploads = (
            self.uploads.singles(endpoint)
            if files_per_request == 1
            else self.uploads.batches(files_per_request)
        )
        name = f"{endpoint}-x{files_per_request}-{self.server.port}"
        return write_requests(self.work, name, PATHS[endpoint], self.server.port, uploads)

    def check(self, endpoint: str) -> None:
        """One request first: a benchmark of error responses would be worthless."""
        body, content_type = multipart_body(self.uploads.singles(endpoint)[0])
        response = httpx.post(
            self.server.base_url + PATHS[endpoint],
            content=body,
            headers={"content-type": content_type},
            timeout=60,
        )
        if response.status_code != 200:
            raise RuntimeError(f"{endpoint}: HTTP {response.status_code}: {response.text[:300]}")

    def measure(
        self,
        endpoint: str,
        concurrency: int,
        *,
        files_per_request: int = 1,
        request_files: list[str] | None = None,
        duration_s: float | None = None,
        max_requests: int | None = None,
        warmup_s: float | None = None,
    ) -> dict[str, Any]:
        """One load cell (the warm-up is neither timed nor counted)."""
        spec = LoadSpec(
            port=self.server.port,
            request_files=request_files or self.requests(endpoint, files_per_request),
            concurrency=concurrency,
            duration_s=duration_s if duration_s is not None else self.plan.duration_s,
            max_requests=max_requests or self.plan.max_requests_per_cell,
            warmup_s=warmup_s if warmup_s is not None else self.plan.warmup_s,
            server_pid=self.server.pid,
        )
        batches_before = self.batch_totals()
        result = run_load(spec)
        server_cpu_s = result.server_cpu_s or 0.0
        batches_after = self.batch_totals()
        return {
            "endpoint": endpoint,
            "concurrency": concurrency,
            "files_per_request": files_per_request,
            "requests_per_s": round(result.requests_per_s, 1),
            "images_per_s": round(result.requests_per_s * files_per_request, 1),
            "latency_ms": {key: round(value, 2) for key, value in result.latency_ms.items()},
            "requests_ok": result.ok,
            "errors": result.error_count,
            "error_detail": {**result.errors, **result.status_counts},
            "elapsed_s": round(result.elapsed_s, 2),
            "server_cores": round(server_cpu_s / result.elapsed_s, 2),
            "server_cpu_ms_per_request": _per_request_ms(server_cpu_s, result.completed),
            "event_loop_cpu_ms_per_request": _per_request_ms(
                result.server_loop_cpu_s or 0.0, result.completed
            ),
            "client_cores": round(result.client_cpu_s / result.elapsed_s, 2),
            "mean_model_batch": _mean_batches(batches_before, batches_after),
        }

    def batch_totals(self) -> dict[str, tuple[float, float]]:
        """``(examples, model calls)`` per micro-batcher from the app's Prometheus metrics;
        empty for a server without them (the naive baseline)."""
        try:
            response = httpx.get(self.server.base_url + "/metrics", timeout=10)
        except httpx.TransportError:
            return {}
        if response.status_code != 200:
            return {}
        totals: dict[str, list[float]] = {}
        for line in response.text.splitlines():
            for suffix, position in (("_sum", 0), ("_count", 1)):
                prefix = f'{BATCH_METRIC}{suffix}{{batcher="'
                if line.startswith(prefix):
                    batcher = line[len(prefix) :].split('"', 1)[0]
                    totals.setdefault(batcher, [0.0, 0.0])[position] = float(line.split()[-1])
        return {batcher: (values[0], values[1]) for batcher, values in totals.items()}


def _per_request_ms(cpu_s: float, requests: int) -> float:
    return round(cpu_s * 1000 / max(requests, 1), 3)


def _mean_batches(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Examples per model call during a cell (its warm-up included), per batcher used."""
    means = {}
    for batcher, (examples, calls) in after.items():
        examples_before, calls_before = before.get(batcher, (0.0, 0.0))
        if calls > calls_before:
            means[batcher] = round((examples - examples_before) / (calls - calls_before), 1)
    return means


def start(app: str, models: Path, work: Path, name: str) -> UvicornServer:
    return UvicornServer(app, {"MODEL_DIR": str(models)}, work / f"{name}.log", "/readyz")


def product_benchmarks(plan: HttpPlan, uploads: Uploads, models: Path, work: Path) -> dict:
    """``uvicorn app.main:app``: memory first (no request yet), then the matrix, then the soak."""
    with start("app.main:app", models, work, "product") as server:
        bench = Bench(server, plan, uploads, work)
        memory: dict[str, Any] = {"startup_s": round(server.startup_s, 1)}
        memory["rss_mib_after_startup"] = round(rss_mib(server.pid), 1)
        device = httpx.get(server.base_url + "/models", timeout=10).json().get("device")
        for endpoint in PRODUCT_ENDPOINTS:
            bench.check(endpoint)
        mixed = [path for endpoint in PRODUCT_ENDPOINTS for path in bench.requests(endpoint)]
        fixed = bench.measure(
            "mixed",
            32,
            request_files=mixed,
            duration_s=600,
            max_requests=plan.memory_requests,
            warmup_s=0,
        )
        memory["requests"] = fixed["requests_ok"] + fixed["errors"]
        memory["request_errors"] = fixed["errors"]
        memory["rss_mib_after_requests"] = round(rss_mib(server.pid), 1)
        matrix = [
            bench.measure(endpoint, concurrency)
            for endpoint in PRODUCT_ENDPOINTS
            for concurrency in plan.concurrencies
        ]
        batch = [
            bench.measure("classify", concurrency, files_per_request=plan.files_per_batch)
            for concurrency in plan.batch_concurrencies
        ]
        soak = []
        for endpoint in PRODUCT_ENDPOINTS:
            rss_before = rss_mib(server.pid)
            row = bench.measure(endpoint, 32, duration_s=plan.soak_s, max_requests=10**7)
            row["rss_mib_before"] = round(rss_before, 1)
            row["rss_mib_after"] = round(rss_mib(server.pid), 1)
            soak.append(row)
    return {"device": device, "memory": memory, "matrix": matrix, "batch": batch, "soak": soak}


def ceiling_benchmarks(plan: HttpPlan, uploads: Uploads, models: Path, work: Path) -> dict:
    """The same stack plus ``/noop``. At the top concurrency ``/noop`` and ``/classify``
    alternate on this server (``PAIRED_ROUNDS`` times each), so the headline ratio compares
    cells measured seconds apart under the same conditions. A second server does the same
    with the stub classifier (:mod:`benchmarks.stub_model`): the serving path's own ceiling."""
    top = max(plan.concurrencies)
    with start("benchmarks.ceiling_app:app", models, work, "ceiling") as server:
        bench = Bench(server, plan, uploads, work)
        bench.check("noop")
        noop = [bench.measure("noop", concurrency) for concurrency in plan.concurrencies[:-1]]
        pairs = _alternate(bench, top)
    stub_models = stub_models_folder(models, work / "stub-models")
    with start("benchmarks.ceiling_app:app", stub_models, work, "ceiling-stub") as server:
        stub_pairs = _alternate(Bench(server, plan, uploads, work), top)
    for _, classify_row in stub_pairs:
        classify_row["endpoint"] = "classify, stub model"
    return {
        "noop": noop + [noop_row for noop_row, _ in pairs],
        "classify_same_server": [classify_row for _, classify_row in pairs],
        "stub_noop": [noop_row for noop_row, _ in stub_pairs],
        "stub_classify": [classify_row for _, classify_row in stub_pairs],
    }


def _alternate(bench: Bench, concurrency: int) -> list[tuple[dict, dict]]:
    bench.check("classify")
    return [
        (bench.measure("noop", concurrency), bench.measure("classify", concurrency))
        for _ in range(PAIRED_ROUNDS)
    ]


def naive_benchmarks(plan: HttpPlan, uploads: Uploads, models: Path, work: Path) -> dict:
    """The tutorial-style server: ``model.predict`` per request."""
    with start("benchmarks.naive_server:app", models, work, "naive") as server:
        bench = Bench(server, plan, uploads, work)
        bench.check("classify")
        rows = [bench.measure("classify", concurrency) for concurrency in plan.concurrencies]
        rss = round(rss_mib(server.pid), 1)
    return {"classify": rows, "rss_mib_after": rss}
