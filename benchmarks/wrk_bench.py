"""HTTP throughput with a compiled load generator: real ``python -m app`` servers driven by wrk.

``python -m benchmarks.wrk_bench --models DIR [--workers 1,2] [--duration S] [--rounds N]``

Each server (one per ``--workers`` value) is started alone, warmed, measured for every
scenario and stopped; with ``--rounds`` above 1 the servers alternate, so a change in the
machine's other load hits every configuration alike. Beside every figure: the server's CPU
(all its processes, from /proc, as core-ms per request: what predicts scaling on more cores),
wrk's own CPU (it must stay a few percent of a core, or it competes with the server) and the
load average when the run started. The in-process SavedModel signature at batch 32
(benchmarks/model_bench.py) is the ceiling the 32-image requests are compared against.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import REPO_ROOT
from benchmarks.model_bench import signature_throughput
from benchmarks.payloads import malaria_images, multipart_body, signs_images
from benchmarks.servers import WorkersServer
from benchmarks.wrk import CONNECTIONS, WRK_TIMEOUT_S, run_wrk, write_script, wrk_missing

BATCH_IMAGES = 32


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    body: bytes
    content_type: str
    images: int = 1


def scenarios(data_dir: Path) -> list[Scenario]:
    (hand,) = signs_images(data_dir, 1)
    (cell,) = malaria_images(data_dir, 1)
    one_form, one_form_type = multipart_body([hand])
    batch_form, batch_form_type = multipart_body(signs_images(data_dir, BATCH_IMAGES))
    return [
        Scenario("/classify 1 image, multipart", "/classify", one_form, one_form_type),
        Scenario("/classify 1 image, raw body", "/classify", hand, "image/jpeg"),
        Scenario(
            f"/classify {BATCH_IMAGES} images, multipart",
            "/classify",
            batch_form,
            batch_form_type,
            BATCH_IMAGES,
        ),
        Scenario("/denoise 1 cell, raw body", "/denoise", cell, "image/png"),
        Scenario("/similar 1 cell, raw body", "/similar", cell, "image/png"),
    ]


def measure_server(
    models: Path, workers: int, cases: list[Scenario], duration_s: float, work: Path, round_: int
) -> list[dict[str, Any]]:
    rows = []
    with WorkersServer(models, workers, work / f"server-{workers}.log") as server:
        for case in cases:
            headers = {"Content-Type": case.content_type}
            lua = write_script(work, str(abs(hash(case.name))), case.body, headers)
            url = server.base_url + case.path
            run_wrk(url, lua, min(1.0, duration_s))  # warm-up: batch shapes traced, pools full
            load = os.getloadavg()[0]
            cpu_before = server.cpu_seconds()
            result = run_wrk(url, lua, duration_s)
            server_cpu_s = server.cpu_seconds() - cpu_before
            answered = max(result["requests"], 1)
            rows.append(
                {
                    "scenario": case.name,
                    "workers": workers,
                    "round": round_,
                    **result,
                    "images_per_s": result["rps"] * case.images,
                    "server_cores": server_cpu_s / duration_s,
                    "server_core_ms_per_request": server_cpu_s * 1000 / answered,
                    "wrk_core_percent": result["wrk_cpu_s"] / duration_s * 100,
                    "load_average": load,
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]], ceiling: dict[str, Any], note: str) -> str:
    header = (
        "| scenario | workers | round | req/s | images/s | p50 ms | p99 ms | server cores | "
        "server core-ms/req | wrk CPU % of a core | load avg (1 min) | failed |"
    )
    lines = [
        "# HTTP throughput under wrk (python -m benchmarks.wrk_bench)",
        "",
        note,
        "",
        header,
        "|" + "---|" * 12,
    ]
    for row in rows:
        lines.append(
            f"| {row['scenario']} | {row['workers']} | {row['round']} | {row['rps']:.0f} | "
            f"{row['images_per_s']:.0f} | {_maybe(row['p50_ms'])} | {_maybe(row['p99_ms'])} | "
            f"{row['server_cores']:.2f} | {row['server_core_ms_per_request']:.2f} | "
            f"{row['wrk_core_percent']:.1f} | {row['load_average']:.2f} | "
            f"{row['failed']}{' ' + row['socket_errors'] if row['socket_errors'] else ''} |"
        )
    batch = [row for row in rows if row["scenario"].startswith(f"/classify {BATCH_IMAGES} ")]
    lines += [
        "",
        f"In-process signature at batch {BATCH_IMAGES} ({ceiling['device']}): "
        f"{ceiling['images_per_s']:.0f} images/s.",
    ]
    for row in batch:
        ratio = row["images_per_s"] / ceiling["images_per_s"]
        lines.append(
            f"- {row['workers']} worker(s), round {row['round']}: {ratio:.2f}x of it over HTTP."
        )
    return "\n".join(lines) + "\n"


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _workers(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"comma-separated worker counts >= 1, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wrk_bench", description=__doc__)
    parser.add_argument("--models", type=Path, required=True, help="models folder")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--workers", type=_workers, default=[1, 2], help="e.g. 1,2")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the servers")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/wrk_results.md"))
    arguments = parser.parse_args(argv)
    if wrk_missing():
        return 1
    cases = scenarios(arguments.data)
    rows = []
    with tempfile.TemporaryDirectory(prefix="wrk-bench-") as work:
        for round_ in range(1, arguments.rounds + 1):
            for workers in arguments.workers:
                rows += measure_server(
                    arguments.models, workers, cases, arguments.duration, Path(work), round_
                )
    (ceiling,) = signature_throughput(
        arguments.models, arguments.data, (BATCH_IMAGES,), arguments.duration
    )
    cpus = len(os.sched_getaffinity(0))
    note = (
        f"{cpus} usable CPU cores; wrk -t1 -c{CONNECTIONS} --timeout {WRK_TIMEOUT_S}s, "
        f"{arguments.duration:g} s per run "
        f"after a 1 s warm-up, {arguments.rounds} round(s), servers one at a time; "
        f"load average at the start of each run beside it (it includes the server itself)."
    )
    arguments.out.write_text(markdown(rows, ceiling, note))
    print(arguments.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
