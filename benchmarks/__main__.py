"""``python -m benchmarks [--quick] [--models DIR] [--data DIR] [--out DIR] [--duration S]``.

Runs every benchmark once, in a fixed order (servers one at a time, then the in-process
ones), bounded in time and request count, and writes ``results.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import REPO_ROOT
from benchmarks.environment import OtherLoad, machine_description, models_description
from benchmarks.http_bench import (
    HttpPlan,
    Uploads,
    ceiling_benchmarks,
    naive_benchmarks,
    product_benchmarks,
)
from benchmarks.report import headlines, write_results
from contract.layout import AUTOENCODER, CLASSIFIER, INDEX

MODELS = (CLASSIFIER, AUTOENCODER, INDEX)
NOTES = (
    "Load: closed loop from `benchmarks/loadgen.py` (raw HTTP/1.1 keep-alive on uvloop) in its "
    "own process on the same machine, so client and server share the CPUs. 'server cores' and "
    "'client cores': CPU seconds each used per wall second of the measured phase. 'server CPU "
    "ms/req': the server's CPU time per completed request; 'of which event loop': the part on "
    "its main thread (HTTP, routing, validation, under the GIL). 'model batch': examples per "
    "model call, from the app's /metrics (warm-up included). Each cell starts with an "
    "uncounted warm-up. Throughput counts 2xx responses only."
)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes (the test)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="models folder")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="results folder")
    parser.add_argument("--duration", type=positive_float, help="seconds per load cell")
    parser.add_argument("--note", default="", help="free text for the conditions table")
    return parser


@dataclass(frozen=True)
class InProcessPlan:
    """Sizes of the benchmarks that run inside this process, after the servers."""

    signature_s: float
    pipeline_fraction: float
    pipeline_batches: int
    faiss_large_size: int
    faiss_queries: int
    hnsw_budget_s: float


def plans(quick: bool, duration: float | None) -> tuple[HttpPlan, InProcessPlan]:
    """``--quick`` runs in about a minute; the full run in under ten on 2 cores."""
    if quick:
        http = HttpPlan(duration or 1.0, 0.3, (1, 8, 32), (1,), 8, 200, 2.0, 5_000)
        return http, InProcessPlan(1.0, 0.02, 10, 20_000, 50, 30.0)
    http = HttpPlan(duration or 6.0, 1.0, (1, 8, 32), (1, 8), 32, 10_000, 30.0, 500_000)
    return http, InProcessPlan(5.0, 0.25, 60, 1_000_000, 200, 150.0)


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    quick = arguments.quick
    plan, in_process = plans(quick, arguments.duration)
    models, data = arguments.models.resolve(), arguments.data.resolve()
    results: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "command": "`python -m benchmarks " + shlex.join(sys.argv[1:]) + "`",
        "notes": NOTES,
        "note": arguments.note,
        "machine": machine_description(),
        "plan": {**asdict(plan), **asdict(in_process)},
        "models": {"folder": str(models), **models_description(models, MODELS)},
        "other_load": {},
    }
    uploads = Uploads.from_data(data, plan.files_per_batch)
    with tempfile.TemporaryDirectory(prefix="cellsign-perf-") as work:
        work_dir = Path(work)
        http: dict[str, Any] = {}
        for name, bench in (
            ("product", product_benchmarks),
            ("ceiling", ceiling_benchmarks),
            ("naive", naive_benchmarks),
        ):
            with OtherLoad() as load:
                _progress(f"HTTP: {name} server")
                http[name] = bench(plan, uploads, models, work_dir)
            results["other_load"][f"HTTP {name}"] = load.summary()
        results["http"] = http
    results["model"], results["pipeline"], results["faiss"] = _in_process(
        in_process, plan.files_per_batch, models, data, results
    )
    results["headlines"] = headlines(results)
    results["load_average_at_end"] = list(os.getloadavg())
    results["gpu_note"] = _gpu_note(results)
    return results


def _in_process(
    plan: InProcessPlan, files_per_batch: int, models: Path, data: Path, results: dict[str, Any]
) -> tuple:
    """TensorFlow and FAISS are imported only now, after the servers are gone."""
    from benchmarks.faiss_bench import faiss_benchmarks
    from benchmarks.model_bench import signature_throughput
    from benchmarks.pipeline_bench import pipeline_throughput

    with OtherLoad() as load:
        _progress("in-process signature")
        model = signature_throughput(models, data, (1, files_per_batch), plan.signature_s)
    results["other_load"]["signature"] = load.summary()
    with OtherLoad() as load:
        _progress("input pipeline")
        pipeline = pipeline_throughput(models, data, plan.pipeline_fraction, plan.pipeline_batches)
    results["other_load"]["pipeline"] = load.summary()
    with OtherLoad() as load:
        _progress("FAISS")
        faiss = faiss_benchmarks(
            models, plan.faiss_large_size, plan.faiss_queries, plan.hnsw_budget_s
        )
    results["other_load"]["FAISS"] = load.summary()
    return model, pipeline, faiss


def _gpu_note(results: dict[str, Any]) -> str:
    gpus = results["machine"]["gpus"]
    if not gpus:
        return (
            "No GPU on this machine: no GPU rows were measured. On a machine with an NVIDIA GPU "
            "the same run serves on it (the app's DEVICE=auto) and the in-process rows run there; "
            "the device column and the server device above say which was used."
        )
    device = results["http"]["product"]["device"]
    return f"GPU present ({', '.join(gpus)}): the server reported device {device}."


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _input_problem(models: Path, data: Path) -> str | None:
    for name, path in (("models", models), ("data", data)):
        if not path.is_dir():
            return f"{name} folder not found: {path}"
    for model in MODELS:
        if not any(version.name.isdigit() for version in (models / model).glob("*")):
            return f"no {model} version under {models} (train: python -m training all)"
    return None


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    problem = _input_problem(arguments.models, arguments.data)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        results = run(arguments)
    except (RuntimeError, TimeoutError, FileNotFoundError) as error:
        print(f"error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    results["total_s"] = round(time.monotonic() - started, 1)
    markdown_path, json_path = write_results(results, arguments.out)
    print(f"wrote {markdown_path} and {json_path} in {results['total_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
