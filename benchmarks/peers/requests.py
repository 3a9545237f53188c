"""The requests each server's users would send, encoded once before a run, and the readers
that take the class probabilities out of each answer (to check a server before timing it).

- Triton (and cellsign's ``/v2``): the Open Inference Protocol with Triton's binary tensor
  extension, as ``tritonclient.http`` sends it: a JSON header, then the raw tensor, the
  header's length in ``Inference-Header-Content-Length``; the image is one BYTES element
  (4-byte little-endian length, then the JPEG file) and the output comes back binary.
- cellsign, BentoML: a multipart form upload (what a browser or ``curl -F`` sends).
- LitServe: JSON with the file base64-encoded, as LitServe's image examples take it.
- cellsign, Ray Serve: the JPEG as the raw body (``Content-Type: image/jpeg``).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np

from benchmarks.payloads import multipart_body

HEADER_LENGTH = "Inference-Header-Content-Length"
V2_INPUT = "image"  # cellsign's name for the encoded-image input; the Triton peer uses it too
V2_OUTPUT = "probabilities"


@dataclass(frozen=True)
class PeerRequest:
    kind: str  # how the image travels, for the table
    path: str
    body: bytes
    headers: dict[str, str]
    probabilities: Callable[[httpx.Response], np.ndarray] = field(repr=False)


def v2_binary_body(image: bytes) -> tuple[bytes, dict[str, str]]:
    """One image as a ``[1, 1]`` BYTES input, binary output asked for."""
    tensor = struct.pack("<I", len(image)) + image
    header = {
        "inputs": [
            {
                "name": V2_INPUT,
                "datatype": "BYTES",
                "shape": [1, 1],
                "parameters": {"binary_data_size": len(tensor)},
            }
        ],
        "outputs": [{"name": V2_OUTPUT, "parameters": {"binary_data": True}}],
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(encoded))}
    return encoded + tensor, headers


def v2_probabilities(response: httpx.Response) -> np.ndarray:
    """The ``probabilities`` output of a v2 answer, binary or JSON."""
    response.raise_for_status()
    body = response.content
    json_size = int(response.headers.get(HEADER_LENGTH, len(body)))
    header = json.loads(body[:json_size])
    offset = json_size
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if output["name"] == V2_OUTPUT:
            if size is None:
                values = np.asarray(output["data"], dtype=np.float32)
            else:
                values = np.frombuffer(body[offset : offset + size], dtype="<f4")
            return values.reshape(output["shape"])
        offset += size or 0
    raise ValueError(f"no {V2_OUTPUT!r} output in {header}")


def json_probabilities(response: httpx.Response) -> np.ndarray:
    """``{"probabilities": [...]}`` (the peers' answer, ``servers.signs.answer``), or a list of
    them (BentoML's batchable API answers a list per request)."""
    response.raise_for_status()
    answer = response.json()
    answers = answer if isinstance(answer, list) else [answer]
    return np.asarray([each["probabilities"] for each in answers], dtype=np.float32)


def cellsign_probabilities(response: httpx.Response) -> np.ndarray:
    """``/classify``'s predictions, probabilities in class-id order."""
    response.raise_for_status()
    rows = []
    for prediction in response.json()["predictions"]:
        by_name = prediction["probabilities"]
        rows.append([value for _, value in sorted(by_name.items(), key=lambda item: item[0])])
    return np.asarray(rows, dtype=np.float32)


def v2_request(image: bytes, path: str) -> PeerRequest:
    body, headers = v2_binary_body(image)
    return PeerRequest("v2 binary tensor", path, body, headers, v2_probabilities)


def multipart_request(
    image: bytes, path: str, field_name: str, read: Callable[[httpx.Response], np.ndarray]
) -> PeerRequest:
    body, content_type = multipart_body([image], field_name)
    return PeerRequest("multipart", path, body, {"Content-Type": content_type}, read)


def raw_request(
    image: bytes, path: str, read: Callable[[httpx.Response], np.ndarray]
) -> PeerRequest:
    return PeerRequest("raw body", path, image, {"Content-Type": "image/jpeg"}, read)


def base64_json_request(
    image: bytes, path: str, read: Callable[[httpx.Response], np.ndarray]
) -> PeerRequest:
    body = json.dumps({"image": base64.b64encode(image).decode()}).encode()
    return PeerRequest("JSON, base64", path, body, {"Content-Type": "application/json"}, read)
