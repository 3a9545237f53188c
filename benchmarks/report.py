"""Turn the collected measurements into ``results.json`` and a Markdown ``results.md``; and
the Markdown helpers the single benchmarks (``python -m benchmarks.<name>``) share."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SECTIONS = (
    "Conditions",
    "Headlines",
    "HTTP endpoints",
    "HTTP ceiling",
    "Naive baseline",
    "Several images per request",
    "Memory and soak",
    "Input pipeline",
    "FAISS",
    "GPU",
)


def headlines(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The three ratios the project set as goals, each computed from cells of this run."""
    http, top = results["http"], max(results["plan"]["concurrencies"])
    ceiling = http["ceiling"]
    noop_top = _mean_rps([row for row in ceiling["noop"] if row["concurrency"] == top])
    paired_classify = _mean_rps(ceiling["classify_same_server"])
    ours_top = _at(_rows(http["product"]["matrix"], "classify"), top)["requests_per_s"]
    naive_top = _at(http["naive"]["classify"], top)["requests_per_s"]
    best_batch = max(http["product"]["batch"], key=lambda row: row["images_per_s"])
    raw = next(
        row for row in results["model"] if row["batch_size"] == best_batch["files_per_request"]
    )
    soak_errors = sum(row["errors"] for row in http["product"]["soak"])
    lines = [
        (
            f"/classify vs /noop req/s, c={top}, alternating on one server (mean of rounds)",
            paired_classify / noop_top,
            0.8,
        ),
        (f"/classify (app.main) vs /noop req/s, c={top}", ours_top / noop_top, 0.8),
        (f"/classify vs naive model.predict server req/s, c={top}", ours_top / naive_top, 10.0),
        (
            f"{best_batch['files_per_request']} images per /classify request "
            f"(c={best_batch['concurrency']}) vs in-process signature at batch "
            f"{raw['batch_size']}, images/s",
            best_batch["images_per_s"] / raw["images_per_s"],
            0.6,
        ),
    ]
    rows = [
        {"measure": name, "ratio": round(ratio, 3), "goal": f">= {goal}", "met": ratio >= goal}
        for name, ratio, goal in lines
    ]
    rows.append(
        {
            "measure": "errors during the soak",
            "ratio": soak_errors,
            "goal": "0",
            "met": not soak_errors,
        }
    )
    return rows


def _mean_rps(rows: list[dict[str, Any]]) -> float:
    return sum(row["requests_per_s"] for row in rows) / len(rows)


def _rows(matrix: list[dict[str, Any]], endpoint: str) -> list[dict[str, Any]]:
    return [row for row in matrix if row["endpoint"] == endpoint]


def _at(rows: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    return next(row for row in rows if row["concurrency"] == concurrency)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_rows(template: str, rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """One Markdown table row per measured row: ``template`` is a ``str.format`` pattern over
    the row's keys (``"| {side} | {rps:.0f} |"``), so a table's columns and their formats
    read as one pattern, next to its header."""
    return [template.format_map(row) for row in rows]


def publish(text: str, out: Path) -> None:
    """Write a benchmark's Markdown to ``out``, the results file the repository keeps
    (making its folder), and print it for whoever ran the benchmark."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


LOAD_COLUMNS: tuple[str, ...] = ("endpoint", "conc.", "req/s", "p50 ms", "p95 ms", "p99 ms")
LOAD_COLUMNS += ("errors", "server cores", "server CPU ms/req", "of which event loop")
LOAD_COLUMNS += ("client cores", "model batch")


def _load_table(rows: list[dict[str, Any]]) -> str:
    cells = [
        [row["endpoint"], row["concurrency"], row["requests_per_s"]]
        + [row["latency_ms"].get(key, "-") for key in ("p50", "p95", "p99")]
        + [row["errors"], row["server_cores"], row["server_cpu_ms_per_request"]]
        + [row["event_loop_cpu_ms_per_request"]]
        + [row["client_cores"], _batches_cell(row["mean_model_batch"])]
        for row in rows
    ]
    return table(LOAD_COLUMNS, cells)


def _batches_cell(means: dict[str, float]) -> str:
    return ", ".join(f"{name} {mean}" for name, mean in means.items()) or "-"


def _models_cell(models: dict[str, Any]) -> str:
    described = []
    for name, model in models.items():
        if name == "folder":
            continue
        size = (
            f"{model['input']['height']}x{model['input']['width']} px" if "input" in model else ""
        )
        gallery = f"{model['size']:,} codes" if "size" in model else ""
        splits = ", ".join(f"{k} {v:,}" for k, v in (model.get("split_sizes") or {}).items())
        details = "; ".join(part for part in (size, gallery, splits) if part)
        described.append(f"{name} v{model['version']} ({details})")
    return f"`{models['folder']}`: " + ", ".join(described)


def _conditions(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    cpu = f"{machine['processor']}, {machine['cpu_count']} CPUs, {machine['memory_gib']} GiB"
    loads = " / ".join(
        ", ".join(f"{value:.2f}" for value in averages)
        for averages in (machine["load_average_at_start"], results["load_average_at_end"])
    )
    rows = [
        ("date (UTC)", machine["date_utc"]),
        ("machine", cpu),
        ("platform", machine["platform"]),
        ("code", f"git {machine['git']}"),
        ("Python", machine["python"]),
        ("packages", ", ".join(f"{k} {v}" for k, v in machine["versions"].items())),
        ("GPU", ", ".join(machine["gpus"]) or "none"),
        ("server device (GET /models)", results["http"]["product"]["device"]),
        ("load average (1, 5, 15 min) at start / end", loads),
        ("plan", json.dumps(results["plan"])),
        ("models", _models_cell(results["models"])),
        ("total wall time", f"{results['total_s']} s"),
    ]
    if results.get("note"):
        rows.append(("note", results["note"]))
    for name, load in results["other_load"].items():
        cores = f"{load['other_processes_cores']} cores on average over {load['wall_s']} s"
        rows.append((f"other processes during {name}", cores))
    return ["## Conditions", "", table(("", ""), rows), "", results["notes"]]


def _headlines(results: dict[str, Any]) -> list[str]:
    rows = [list(row.values()) for row in results["headlines"]]
    return ["## Headlines", "", table(("measure", "ratio", "goal", "met"), rows)]


def _http(results: dict[str, Any]) -> list[str]:
    http = results["http"]
    ceiling = http["ceiling"]["noop"] + http["ceiling"]["classify_same_server"]
    stub = http["ceiling"]["stub_noop"] + http["ceiling"]["stub_classify"]
    stub_ratio = _mean_rps(http["ceiling"]["stub_classify"]) / _mean_rps(
        http["ceiling"]["stub_noop"]
    )
    return [
        "## HTTP endpoints",
        "",
        "`uvicorn app.main:app`, one worker, access log off.",
        "",
        _load_table(http["product"]["matrix"]),
        "",
        "## HTTP ceiling",
        "",
        "`benchmarks.ceiling_app`: the same app plus `POST /noop`, which reads the same upload"
        " and returns a small JSON. At the top concurrency `/noop` and `/classify` alternate"
        " on this server (noop, classify, noop, classify).",
        "",
        _load_table(ceiling),
        "",
        "A second server of the same app serves a stub classifier instead (`benchmarks.stub_model`:"
        " global average pooling and one Dense layer, so the network costs almost nothing) and"
        " alternates the same way. Decoding, batching, the signature call and the response are"
        " unchanged, so its ratio is the most the serving path allows on this machine:"
        f" **{stub_ratio:.3f}** of `/noop`.",
        "",
        _load_table(stub),
        "",
        "## Naive baseline",
        "",
        "`benchmarks.naive_server`: Keras `TFSMLayer` model, `model.predict` per request.",
        "",
        _load_table(http["naive"]["classify"]),
    ]


def _batches(results: dict[str, Any]) -> list[str]:
    columns = ("files/request", "conc.", "req/s", "images/s", "p50 ms", "p99 ms", "errors")
    rows = [
        [row["files_per_request"], row["concurrency"], row["requests_per_s"], row["images_per_s"]]
        + [row["latency_ms"].get("p50"), row["latency_ms"].get("p99"), row["errors"]]
        + [row["server_cores"]]
        for row in results["http"]["product"]["batch"]
    ]
    signature = [
        [row["batch_size"], row["ms_per_call"], row["images_per_s"], row["device"]]
        for row in results["model"]
    ]
    return [
        "## Several images per request",
        "",
        table((*columns, "server cores"), rows),
        "",
        "In-process `serving_default` signature (no HTTP, no decoding):",
        "",
        table(("batch", "ms/call", "images/s", "device"), signature),
    ]


def _memory(results: dict[str, Any]) -> list[str]:
    product, naive = results["http"]["product"], results["http"]["naive"]
    memory = product["memory"]
    fixed = (
        f"RSS after {memory['requests']:,} mixed requests, c=32, {memory['request_errors']} errors"
    )
    rows = [
        ("start-up to ready", f"{memory['startup_s']} s"),
        ("RSS after start-up", f"{memory['rss_mib_after_startup']} MiB"),
        (fixed, f"{memory['rss_mib_after_requests']} MiB"),
        ("naive server RSS after its runs", f"{naive['rss_mib_after']} MiB"),
    ]
    columns = ("soak", "conc.", "s", "ok", "errors", "req/s", "p99 ms")
    soak = [
        [row["endpoint"], row["concurrency"], row["elapsed_s"], row["requests_ok"], row["errors"]]
        + [row["requests_per_s"], row["latency_ms"].get("p99")]
        + [row["rss_mib_before"], row["rss_mib_after"]]
        for row in product["soak"]
    ]
    return [
        "## Memory and soak",
        "",
        table(("", ""), rows),
        "",
        table((*columns, "RSS before MiB", "RSS after MiB"), soak),
    ]


def _pipeline(results: dict[str, Any]) -> list[str]:
    pipeline = results["pipeline"]
    intro = (
        f"{pipeline['cells']:,} malaria cells at {pipeline['image_size']} px (PNG decode before "
        f"the pipeline: {pipeline['png_decode_s']} s), batch {pipeline['batch_size']}, "
        f"{pipeline['batches_timed']} batches timed after one warm epoch."
    )
    columns = ("variant", "pipeline alone images/s", "feeding denoise images/s")
    rows = [list(row.values()) for row in pipeline["rows"]]
    return ["## Input pipeline", "", intro, "", table(columns, rows)]


def _faiss(results: dict[str, Any]) -> list[str]:
    faiss = results["faiss"]
    intro = (
        f"Metric {faiss['metric']}; real gallery {faiss['real_gallery_size']:,} codes "
        f"({faiss['real_codes_source']}), queries held out of it; large set: Gaussian mixture "
        "of the same dimension. Single-query searches, k=10, recall against Flat."
    )
    columns: tuple[str, ...] = ("data", "index", "size", "dim", "build s", "index MiB")
    columns += ("RSS delta MiB", "p50 ms", "p99 ms", "recall@10", "params")
    keys: tuple[str, ...] = ("data", "index", "size", "dimension", "build_s", "index_mib")
    keys += ("rss_delta_mib", "query_p50_ms", "query_p99_ms", "recall_at_10")
    rows = [[row[key] for key in keys] + [json.dumps(row["params"])] for row in faiss["rows"]]
    return ["## FAISS", "", intro, "", table(columns, rows)]


def markdown(results: dict[str, Any]) -> str:
    parts = [f"# cellsign benchmarks ({results['mode']} run)", "", results["command"], ""]
    for section in (_conditions, _headlines, _http, _batches, _memory, _pipeline, _faiss):
        parts += [*section(results), ""]
    parts += ["## GPU", "", results["gpu_note"], ""]
    return "\n".join(parts)


def write_results(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out_dir / "results.json", out_dir / "results.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    markdown_path.write_text(markdown(results))
    return markdown_path, json_path
