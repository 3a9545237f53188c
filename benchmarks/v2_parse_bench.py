"""What reading a v2 infer body costs: CPU and peak Python memory of ``InferBodyReader`` on
the hostile bodies of issue #25 and on the largest bodies its limits still accept.

The body is fed in 64 KiB chunks as uvicorn delivers it. Run ``python -m
benchmarks.v2_parse_bench``; docs/v2-protocol.md quotes its results.
"""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

from app.api.v2.protocol import MAX_JSON_BYTES, InferBodyReader, TensorLimits
from app.core.errors import ServiceError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # the settings' defaults
LIMITS = TensorLimits(64, 64, 64, MAX_UPLOAD_BYTES)
CHUNK = 64 * 1024
PIXEL_BYTES = 64 * 64 * 3 * 4


def _header(tensor: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({"inputs": [tensor], **fields}).encode()


def _binary(name: str, datatype: str, shape: list[int], size: int) -> bytes:
    return _header(
        {
            "name": name,
            "datatype": datatype,
            "shape": shape,
            "parameters": {"binary_data_size": size},
        }
    )


def bodies() -> Iterator[tuple[str, bytes, bytes, str | None]]:
    """``(label, JSON part, binary part, Inference-Header-Content-Length)``."""
    head = _binary("images", "FP32", [2**64 - 1] * (1_700_000 // 21), 4)
    yield "1.7 MB shape of 2^64-1 dimensions", head, b"\0" * 4, str(len(head))
    head = _binary("image", "BYTES", [1], 100_000_004)
    element = (100_000_000).to_bytes(4, "little") + b"\xff" * 100_000_000
    yield "BYTES element of 100 MB of 0xFF", head, element, str(len(head))
    count = 600_000_000 // PIXEL_BYTES
    head = _binary("images", "FP32", [count, 64, 64, 3], count * PIXEL_BYTES)
    yield "600 MB FP32 body", head, bytes(count * PIXEL_BYTES), str(len(head))
    head = _binary("images", "FP32", [1, 64, 64, 3], PIXEL_BYTES)
    yield "header length of 5000 digits", head, bytes(PIXEL_BYTES), "9" * 5000
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    yield "JSON nested 100,000 deep", deep, b"", None
    floats = _header(
        {"name": "images", "datatype": "FP32", "shape": [1, 64, 64, 3], "data": [0.5] * 12288}
    )
    fill = (MAX_JSON_BYTES - len(floats) - 16) // 4
    padded = floats[:-1] + b', "x": [' + b",".join([b"0.5"] * fill) + b"]}"
    yield "2 MiB JSON of short floats (accepted)", padded, b"", None
    lists = floats[:-1] + b', "x": [' + b",".join([b"[]"] * (fill * 4 // 3)) + b"]}"
    yield "2 MiB JSON of empty lists", lists, b"", None
    head = _binary("images", "FP32", [64, 64, 64, 3], 64 * PIXEL_BYTES)
    yield "FP32, 64 images (accepted)", head, bytes(64 * PIXEL_BYTES), str(len(head))
    element = MAX_UPLOAD_BYTES.to_bytes(4, "little") + b"\xff" * MAX_UPLOAD_BYTES
    head = _binary("image", "BYTES", [64, 1], 64 * len(element))
    yield "BYTES, 64 elements of 10 MiB (accepted)", head, element * 64, str(len(head))


def _reading(head: bytes, rest: bytes, length: str | None) -> Callable[[], str]:
    def read() -> str:
        reader = None
        try:
            reader = InferBodyReader(length, str(len(head) + len(rest)), MAX_JSON_BYTES, LIMITS)
            reader.feed(head)
            view = memoryview(rest)
            for start in range(0, len(rest), CHUNK):
                reader.feed(bytes(view[start : start + CHUNK]))
            reader.finish().close()
        except ServiceError as error:
            if reader is not None:
                reader.close()
            return f"{error.status_code} {error.detail[:60]}"
        return "accepted"

    return read


def main() -> None:
    for label, head, rest, length in bodies():
        read = _reading(head, rest, length)
        gc.collect()
        start = time.process_time()
        outcome = read()
        cpu_ms = (time.process_time() - start) * 1000
        gc.collect()
        tracemalloc.start()
        read()
        peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        print(f"{label}: {cpu_ms:.1f} ms CPU, {peak_mb:.1f} MB peak: {outcome}")


if __name__ == "__main__":
    main()
