"""``python -m benchmarks.hostile_bench [--runs N] [--out FILE] [--quick]``: decode CPU and
memory of the worst upload of each format that the default limits still accept, and of
refusing the structure floods.

In-process (no HTTP, no model): each file goes through ``app.api.uploads.prepare``, the
input gate + decode + resize a request pays before its model runs, timed with
``time.process_time`` (CPU of this process, all threads) over ``--runs`` runs; the median is
reported. Peak memory is the growth of the process's peak resident set over one more run
(Linux: the peak is reset through ``/proc/self/clear_refs`` first). The inputs are the
cheapest to send and the most expensive to decode that each format allows at the pixel and
scan limits (flat pixels; a progressive JPEG padded with empty scans), the files at each
structure budget of ``app.core.image_structure``, and the structure floods
(``benchmarks.hostile_inputs.structure_floods``), which must be refused. Writes a markdown
table (``benchmarks/hostile_results.md`` by default) and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import io
import re
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from app.api.overload.decode_pool import DecodePool
from app.api.uploads import RawImage, prepare, read_uploads
from app.core import image_structure as budgets
from app.core.deadline import Deadline
from app.core.errors import PayloadTooLargeError, ServiceError
from app.core.imaging import FULL_DECODE_WEIGHT, fit_within, set_pixel_limit, to_png
from app.settings import Settings
from benchmarks.environment import machine_description
from benchmarks.hostile_inputs import (
    JPEG_COM,
    flat_image,
    flat_png,
    gif_comment_flood,
    jpeg_fill_flood,
    jpeg_segment_flood,
    png_chunk_flood,
    png_text_flood,
    progressive_jpeg,
    rle_bmp,
    rle_bmp_line_ends,
    structure_floods,
    tiff_entry_flood,
    tiff_strip_flood,
    webp_chunk_flood,
)
from benchmarks.report import publish

MODEL_SIDE = 64  # the classifier's input; the autoencoder's 48 px costs the same to decode


@dataclass(frozen=True)
class Row:
    kind: str
    size: str
    kilobytes: float
    cpu_ms: float
    peak_mb: float  # NaN where the peak resident set cannot be reset
    outcome: str


def noisy_jpeg(width: int, height: int, max_bytes: int) -> bytes:
    """Colour noise (the most entropy-coded data per pixel) at the best quality that fits."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    for quality in (90, 75, 50, 30, 10):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
    raise ValueError(f"no quality fits {width}x{height} noise in {max_bytes} bytes")


def worst_inputs(settings: Settings) -> list[tuple[str, tuple[int, int], bytes]]:
    """``(kind, (width, height), bytes)`` of the worst accepted file of each format."""
    side = int(settings.max_full_decode_pixels**0.5)
    jpeg_width = int((settings.max_image_pixels * 4 / 3) ** 0.5)  # a 4:3 photo
    jpeg_height = settings.max_image_pixels // jpeg_width
    full = (side, side)
    webp = (min(side, 16383), min(side, 16383))
    # Pillow decodes run-length BMPs in Python: they have a smaller pixel limit
    rle_side = int(min(budgets.MAX_BMP_RLE_PIXELS, settings.max_full_decode_pixels) ** 0.5)
    return [
        (
            "JPEG baseline, colour noise",
            (jpeg_width, jpeg_height),
            noisy_jpeg(jpeg_width, jpeg_height, settings.max_upload_bytes),
        ),
        (
            f"JPEG progressive, {settings.max_jpeg_scans} scans",
            full,
            progressive_jpeg(side, settings.max_jpeg_scans),
        ),
        ("PNG 8-bit RGB", full, flat_png(side, side, 8, 2)),
        ("PNG 16-bit grey", full, flat_png(side, side, 16, 0)),
        ("PNG 16-bit RGBA", full, flat_png(side, side, 16, 6)),
        ("GIF", full, flat_image("GIF", side, side, "L")),
        ("WebP lossy", webp, flat_image("WEBP", *webp)),
        ("WebP lossless", webp, flat_image("WEBP", *webp, lossless=True)),
        ("BMP 8-bit RLE", (rle_side, rle_side), rle_bmp(rle_side, rle_side)),
        ("TIFF deflate", full, flat_image("TIFF", side, side, compression="tiff_adobe_deflate")),
    ]


def at_budget_inputs(settings: Settings) -> list[tuple[str, tuple[int, int], bytes]]:
    """The files at each structure budget (accepted): what a budget still lets through."""
    side = 64
    strips = budgets.MAX_TIFF_STRIPS
    strip_width = settings.max_full_decode_pixels // strips
    rle_side = int(min(budgets.MAX_BMP_RLE_PIXELS, settings.max_full_decode_pixels) ** 0.5)
    return [
        (
            f"JPEG, {budgets.MAX_JPEG_SEGMENTS - 10} comment segments",
            (side, side),
            jpeg_segment_flood(budgets.MAX_JPEG_SEGMENTS - 10, JPEG_COM),
        ),
        (
            f"JPEG, {budgets.MAX_JPEG_PADDING_BYTES} fill bytes",
            (side, side),
            jpeg_fill_flood(budgets.MAX_JPEG_PADDING_BYTES),
        ),
        (
            f"PNG, {budgets.MAX_PNG_CHUNKS - 2} IDAT chunks",
            (side, side),
            png_chunk_flood(budgets.MAX_PNG_CHUNKS - 2),
        ),
        (
            f"PNG, {budgets.MAX_PNG_COMPRESSED_CHUNKS} zTXt chunks of 1 MB",
            (side, side),
            png_text_flood(budgets.MAX_PNG_COMPRESSED_CHUNKS),
        ),
        (
            f"GIF, {budgets.MAX_GIF_SUB_BLOCKS - 1} comment sub-blocks",
            (side, side),
            gif_comment_flood(budgets.MAX_GIF_SUB_BLOCKS - 1),
        ),
        (
            f"TIFF, {strips} one-row strips",
            (strip_width, strips),
            tiff_strip_flood(strips, strip_width),
        ),
        (
            f"TIFF, {budgets.MAX_TIFF_IFD_ENTRIES} IFD entries",
            (side, side),
            tiff_entry_flood(budgets.MAX_TIFF_IFD_ENTRIES),
        ),
        (
            "BMP RLE8, a pixel and a line end per row",
            (rle_side, rle_side),
            rle_bmp_line_ends(rle_side, rle_side),
        ),
        (
            f"WebP, {budgets.MAX_WEBP_CHUNKS - 2} unknown chunks",
            (side, side),
            webp_chunk_flood(budgets.MAX_WEBP_CHUNKS - 2),
        ),
    ]


def median_cpu_ms(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return statistics.median(times) * 1000


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)


def peak_memory_mb(work: Callable[[], object]) -> float:
    """Growth of the peak resident set over one ``work()`` (NaN off Linux): freed memory
    is handed back to the system first (``malloc_trim``), so a run reuses none of it."""
    gc.collect()
    if hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current resident set
        before = _status_kb("VmRSS")
        work()
        return (_status_kb("VmHWM") - before) / 1024
    except OSError:
        return float("nan")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        found = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    if found is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(found.group(1))


def measure(settings: Settings, runs: int, flood_bytes: int) -> list[Row]:
    """The rows, measured under the serving app's Pillow limit (given back afterwards: the
    smoke test runs this inside the test process); floods of ``flood_bytes``."""
    previous = set_pixel_limit(settings.max_image_pixels)
    try:
        return _measure(settings, runs, flood_bytes)
    finally:
        set_pixel_limit(previous)


def _row(
    kind: str, size: str, data: bytes, work: Callable[[], object], runs: int, outcome: str
) -> Row:
    return Row(
        kind, size, len(data) / 1024, median_cpu_ms(work, runs), peak_memory_mb(work), outcome
    )


def _measure(settings: Settings, runs: int, flood_bytes: int) -> list[Row]:
    rows = []
    for kind, (width, height), data in worst_inputs(settings) + at_budget_inputs(settings):
        rows.append(
            _row(
                kind,
                f"{width}x{height}",
                data,
                partial(prepare, data, "x", settings, MODEL_SIDE, MODEL_SIDE),
                runs,
                "accepted",
            )
        )
    for flood in structure_floods(flood_bytes):
        rows.append(
            _row(
                flood.name,
                "-",
                flood.data,
                partial(_refusal, flood.data, settings),
                runs,
                f"refused ({flood.status})",
            )
        )
    near_budget = png_text_flood(budgets.MAX_PNG_COMPRESSED_CHUNKS)
    files = [RawImage("text.png", near_budget)] * settings.max_files_per_request
    rows.append(
        _row(
            f"one request of {len(files)} PNGs with "
            f"{budgets.MAX_PNG_COMPRESSED_CHUNKS} zTXt chunks each",
            "64x64",
            near_budget * len(files),
            lambda: _request_refusal(files, settings),
            runs,
            "refused (413)",
        )
    )
    side = int(settings.max_full_decode_pixels**0.5)
    refused = progressive_jpeg(side, 2000)
    rows.append(
        _row(
            "JPEG progressive, 2,000 scans",
            f"{side}x{side}",
            refused,
            lambda: _refusal(refused, settings),
            runs,
            "refused (413)",
        )
    )
    output = fit_within((side * 4, side * 3), settings.denoise_max_side)
    pixels = np.random.default_rng(0).random((48, 48, 3), dtype=np.float32)
    encoded = to_png(pixels, output)
    rows.append(
        _row(
            "/denoise?size=original output PNG",
            f"{output[0]}x{output[1]}",
            encoded,
            lambda: to_png(pixels, output),
            runs,
            "encoded",
        )
    )
    return rows


def _refusal(data: bytes, settings: Settings) -> None:
    try:
        prepare(data, "x", settings, MODEL_SIDE, MODEL_SIDE)
    except PayloadTooLargeError:
        return
    except ServiceError as error:
        raise RuntimeError(f"the hostile file got {error.status_code}: {error.detail}") from error
    raise RuntimeError("the hostile file was accepted")


def _request_refusal(files: list[RawImage], settings: Settings) -> None:
    """One request's decoding, as ``read_uploads`` runs it (one pool thread)."""
    pool = DecodePool(ThreadPoolExecutor(1), threading.BoundedSemaphore(1))
    try:
        asyncio.run(
            read_uploads(files, settings, MODEL_SIDE, MODEL_SIDE, Deadline.after(600), pool)
        )
    except PayloadTooLargeError:
        return
    finally:
        pool.close()
    raise RuntimeError("the request was accepted")


def markdown(rows: list[Row], settings: Settings, runs: int) -> str:
    machine = machine_description()
    lines = [
        "# Worst accepted upload of each format, and refused structure floods: CPU and memory",
        "",
        f"`python -m benchmarks.hostile_bench`, median of {runs} runs, in-process "
        "(`app.api.uploads.prepare`: the input gate's byte cap, structure walk and header "
        "checks, decode, resize to 64x64 float32); peak MB: growth of the peak resident set "
        "over one more run. "
        f"Limits: MAX_IMAGE_PIXELS {settings.max_image_pixels}, MAX_FULL_DECODE_PIXELS "
        f"{settings.max_full_decode_pixels}, MAX_REQUEST_PIXELS "
        f"{settings.max_request_pixels}, MAX_JPEG_SCANS {settings.max_jpeg_scans}, "
        f"MAX_UPLOAD_BYTES {settings.max_upload_bytes}; structure budgets from "
        "`app/core/image_structure.py`. "
        f"Machine: {machine['processor']}, "
        f"{machine['cpu_count']} CPUs, load average at start "
        f"{', '.join(f'{load:.1f}' for load in machine['load_average_at_start'])}.",
        "",
        "| input | pixels | file KB | CPU ms | peak MB | outcome |",
        "|---|---|---:|---:|---:|---|",
    ]
    lines += [
        f"| {row.kind} | {row.size} | {row.kilobytes:.1f} | {row.cpu_ms:.1f} "
        f"| {row.peak_mb:.1f} | {row.outcome} |"
        for row in rows
    ]
    per_request = settings.max_request_pixels
    lines += [
        "",
        "One request decodes at most MAX_REQUEST_PIXELS in all, a pixel decoded at full "
        f"size counting {FULL_DECODE_WEIGHT}: "
        f"{per_request // (FULL_DECODE_WEIGHT * settings.max_full_decode_pixels)} of the "
        f"full-size rows, or {per_request // settings.max_image_pixels} baseline JPEG(s) of "
        "the first row.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile_bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per input")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/hostile_results.md"))
    parser.add_argument("--quick", action="store_true", help="tiny limits and one run (a test)")
    arguments = parser.parse_args(argv)
    settings = Settings()
    runs = arguments.runs
    flood_bytes = settings.max_upload_bytes
    if arguments.quick:
        settings = settings.model_copy(
            update={
                "max_image_pixels": 200_000,
                "max_full_decode_pixels": 40_000,
                "max_request_pixels": 200_000,
            }
        )
        runs, flood_bytes = 1, 200_000
    publish(markdown(measure(settings, runs, flood_bytes), settings, runs), arguments.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
