"""v2 infer bodies for the protocol, fuzz and HTTP tests: JSON headers and binary tensors."""

from __future__ import annotations

import json
from typing import Any

from app.api.v2.protocol import TensorLimits

# Small enough that a test body at a limit stays small.
LIMITS = TensorLimits(height=4, width=4, max_images=8, max_element_bytes=1000)
MAX_JSON = 100_000


def binary_body(header: dict[str, Any], *parts: bytes) -> tuple[bytes, str]:
    """The body and its ``Inference-Header-Content-Length``."""
    encoded = json.dumps(header).encode()
    return encoded + b"".join(parts), str(len(encoded))


def bytes_element(data: bytes) -> bytes:
    """One binary BYTES element: its 4-byte little-endian length, then the bytes."""
    return len(data).to_bytes(4, "little") + data


def tensor(name: str, datatype: str, shape: list[Any], **fields: Any) -> dict[str, Any]:
    """A request with one input; ``size=`` becomes its ``binary_data_size``."""
    spec: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if "size" in fields:
        spec["parameters"] = {"binary_data_size": fields.pop("size")}
    return {"inputs": [spec | fields]}
