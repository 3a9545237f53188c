"""``python -m benchmarks.hostile_bench [--runs N] [--out FILE] [--quick]``: decode CPU of the
worst upload of each format that the default limits still accept.

In-process (no HTTP, no model): each file goes through ``app.api.uploads.prepare``, the
decode + resize a request pays before its model runs, timed with ``time.process_time``
(CPU of this process, all threads) over ``--runs`` runs; the median is reported. The inputs
are the cheapest to send and the most expensive to decode that each format allows at the
pixel and scan limits (flat pixels; a progressive JPEG padded with empty scans). Writes a
markdown table (``benchmarks/hostile_results.md`` by default) and prints it.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from app.api.uploads import prepare
from app.core.errors import PayloadTooLargeError
from app.core.imaging import fit_within, set_pixel_limit, to_png
from app.settings import Settings
from benchmarks.environment import machine_description
from benchmarks.hostile_inputs import flat_image, flat_png, progressive_jpeg, rle_bmp

MODEL_SIDE = 64  # the classifier's input; the autoencoder's 48 px costs the same to decode


@dataclass(frozen=True)
class Row:
    kind: str
    size: str
    kilobytes: float
    cpu_ms: float
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
        ("BMP 8-bit RLE", full, rle_bmp(side, side)),
        ("TIFF deflate", full, flat_image("TIFF", side, side, compression="tiff_adobe_deflate")),
    ]


def median_cpu_ms(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return statistics.median(times) * 1000


def measure(settings: Settings, runs: int) -> list[Row]:
    """The rows, measured under the serving app's Pillow limit (given back afterwards: the
    smoke test runs this inside the test process)."""
    previous = set_pixel_limit(settings.max_image_pixels)
    try:
        return _measure(settings, runs)
    finally:
        set_pixel_limit(previous)


def _measure(settings: Settings, runs: int) -> list[Row]:
    rows = []
    for kind, (width, height), data in worst_inputs(settings):
        rows.append(
            Row(
                kind,
                f"{width}x{height}",
                len(data) / 1024,
                median_cpu_ms(
                    lambda data=data: prepare(data, "x", settings, MODEL_SIDE, MODEL_SIDE), runs
                ),
                "accepted",
            )
        )
    side = int(settings.max_full_decode_pixels**0.5)
    refused = progressive_jpeg(side, 2000)
    rows.append(
        Row(
            "JPEG progressive, 2,000 scans",
            f"{side}x{side}",
            len(refused) / 1024,
            median_cpu_ms(lambda: _refusal(refused, settings), runs),
            "refused (413)",
        )
    )
    output = fit_within((side * 4, side * 3), settings.denoise_max_side)
    pixels = np.random.default_rng(0).random((48, 48, 3), dtype=np.float32)
    rows.append(
        Row(
            "/denoise?size=original output PNG",
            f"{output[0]}x{output[1]}",
            len(to_png(pixels, output)) / 1024,
            median_cpu_ms(lambda: to_png(pixels, output), runs),
            "encoded",
        )
    )
    return rows


def _refusal(data: bytes, settings: Settings) -> None:
    try:
        prepare(data, "x", settings, MODEL_SIDE, MODEL_SIDE)
    except PayloadTooLargeError:
        return
    raise RuntimeError("the hostile JPEG was accepted")


def markdown(rows: list[Row], settings: Settings, runs: int) -> str:
    machine = machine_description()
    lines = [
        "# Worst accepted upload of each format: decode CPU",
        "",
        f"`python -m benchmarks.hostile_bench`, median of {runs} runs, in-process "
        "(`app.api.uploads.prepare`: header checks, decode, resize to 64x64 float32). "
        f"Limits: MAX_IMAGE_PIXELS {settings.max_image_pixels}, MAX_FULL_DECODE_PIXELS "
        f"{settings.max_full_decode_pixels}, MAX_REQUEST_PIXELS "
        f"{settings.max_request_pixels}, MAX_JPEG_SCANS {settings.max_jpeg_scans}, "
        f"MAX_UPLOAD_BYTES {settings.max_upload_bytes}. Machine: {machine['processor']}, "
        f"{machine['cpu_count']} CPUs, load average at start "
        f"{', '.join(f'{load:.1f}' for load in machine['load_average_at_start'])}.",
        "",
        "| input | pixels | file KB | CPU ms | outcome |",
        "|---|---|---:|---:|---|",
    ]
    lines += [
        f"| {row.kind} | {row.size} | {row.kilobytes:.1f} | {row.cpu_ms:.1f} | {row.outcome} |"
        for row in rows
    ]
    per_request = settings.max_request_pixels
    lines += [
        "",
        f"One request decodes at most MAX_REQUEST_PIXELS in all: "
        f"{per_request // settings.max_full_decode_pixels} of the full-size rows, or "
        f"{per_request // settings.max_image_pixels} baseline JPEG(s) of the first row.",
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
    if arguments.quick:
        settings = settings.model_copy(
            update={
                "max_image_pixels": 200_000,
                "max_full_decode_pixels": 40_000,
                "max_request_pixels": 200_000,
            }
        )
        runs = 1
    text = markdown(measure(settings, runs), settings, runs)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
