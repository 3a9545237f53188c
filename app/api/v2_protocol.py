"""Open Inference Protocol (KServe v2) inference bodies: parse requests, encode responses.

Both the JSON form and Triton's binary tensor extension are handled. With the extension the
body is the JSON header (its length in the ``Inference-Header-Content-Length`` header)
followed by the raw tensors, in input order, each input naming its byte count in
``parameters.binary_data_size``. Raw FP32 is little-endian; each BYTES element is a 4-byte
little-endian length and then the bytes. In the JSON form a BYTES element is a string, which
here must be base64 (image bytes are not text). Only BYTES and FP32 inputs are accepted:
that is what the models take.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.errors import PayloadTooLargeError, ServiceError

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
_LENGTH_PREFIX = struct.Struct("<I")


class ProtocolError(ServiceError):
    """The inference request breaks the protocol or the model's tensor contract."""

    status_code = 400


@dataclass(frozen=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]  # FP32: array of ``shape``; BYTES: the flat elements


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_outputs: bool  # the request-wide ``binary_data_output`` parameter


def parse_infer_request(
    body: bytes, header_length: str | None, max_json_bytes: int
) -> InferRequest:
    """The request as tensors; ``ProtocolError`` (400) for anything malformed.

    The JSON part is refused (413) above ``max_json_bytes`` before it is parsed: a list of
    numbers costs far more memory parsed than sent, and large tensors belong in the binary
    part, which costs what it weighs.
    """
    if header_length is None:
        json_size = len(body)
    elif header_length.isdigit() and int(header_length) <= len(body):
        json_size = int(header_length)
    else:
        raise ProtocolError(f"{HEADER_LENGTH} must be a byte count within the body")
    if json_size > max_json_bytes:
        raise PayloadTooLargeError(
            f"the JSON part is {json_size} bytes, over the {max_json_bytes} byte limit; "
            "send large tensors with the binary tensor extension"
        )
    try:
        header = json.loads(body[:json_size])
    except ValueError as error:
        raise ProtocolError(f"the request is not JSON: {error}") from error
    if not isinstance(header, dict):
        raise ProtocolError("the request must be a JSON object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list")
    binary = memoryview(body)[json_size:]
    inputs = []
    for position, raw in enumerate(raw_inputs):
        tensor, used = _parse_input(raw, position, binary)
        inputs.append(tensor)
        binary = binary[used:]
    if len(binary):
        raise ProtocolError(f"{len(binary)} bytes of binary data belong to no input")
    parameters = _parameters(header, "request")
    request_id = header.get("id")
    return InferRequest(
        id=None if request_id is None else str(request_id),
        inputs=inputs,
        outputs=_requested_outputs(header.get("outputs")),
        binary_outputs=parameters.get("binary_data_output") is True,
    )


def _parameters(tensor: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError(f"{where}: 'parameters' must be an object")
    return parameters


def _parse_input(raw: object, position: int, binary: memoryview) -> tuple[InputTensor, int]:
    """One input tensor and how many bytes of the binary section it took."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"input {position} must be an object")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str):
        raise ProtocolError(f"input {position}: 'name' must be a string")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ProtocolError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    count = math.prod(shape)
    size = _parameters(raw, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not (isinstance(size, int) and 0 <= size <= len(binary)):
            raise ProtocolError(f"input {name!r}: binary_data_size exceeds the binary data")
        chunk, used = binary[:size], size
    elif "data" in raw:
        chunk, used = None, 0
    else:
        raise ProtocolError(f"input {name!r} has neither 'data' nor binary_data_size")
    if datatype == "FP32":
        data: np.ndarray | list[bytes] = _fp32(name, raw.get("data"), chunk, count)
        data = data.reshape(shape)
    elif datatype == "BYTES":
        data = _bytes_elements(name, raw.get("data"), chunk)
        if len(data) != count:
            raise ProtocolError(f"input {name!r}: {len(data)} elements for shape {shape}")
    else:
        raise ProtocolError(
            f"input {name!r}: datatype {datatype!r} is not supported; the models take BYTES "
            "(encoded images) or FP32 (pixels)"
        )
    return InputTensor(name, datatype, tuple(shape), data), used


def _fp32(name: str, data: object, chunk: memoryview | None, count: int) -> np.ndarray:
    if chunk is not None:
        if len(chunk) != count * 4:
            raise ProtocolError(f"input {name!r}: {len(chunk)} bytes for {count} FP32 values")
        return np.frombuffer(chunk, dtype="<f4").astype(np.float32)
    try:
        values = np.asarray(data, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as error:
        raise ProtocolError(f"input {name!r}: 'data' must be numbers: {error}") from error
    if values.size != count:
        raise ProtocolError(f"input {name!r}: {values.size} values for {count} elements")
    return values


def _bytes_elements(name: str, data: object, chunk: memoryview | None) -> list[bytes]:
    if chunk is not None:
        elements = []
        offset = 0
        while offset < len(chunk):
            if offset + 4 > len(chunk):
                raise ProtocolError(f"input {name!r}: truncated BYTES length prefix")
            (length,) = _LENGTH_PREFIX.unpack_from(chunk, offset)
            offset += 4
            if offset + length > len(chunk):
                raise ProtocolError(f"input {name!r}: a BYTES element runs past its data")
            elements.append(bytes(chunk[offset : offset + length]))
            offset += length
        return elements
    flat = _flatten(data)
    try:
        return [base64.b64decode(element, validate=True) for element in flat]
    except (binascii.Error, TypeError, ValueError) as error:
        raise ProtocolError(
            f"input {name!r}: in JSON each BYTES element must be a base64 string "
            "(or send the binary tensor extension)"
        ) from error


def _flatten(data: object) -> list[object]:
    if not isinstance(data, list):
        raise ProtocolError("'data' must be a list")
    flat: list[object] = []
    for element in data:
        flat.extend(_flatten(element) if isinstance(element, list) else [element])
    return flat


def _requested_outputs(raw: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(
        isinstance(output, dict) and isinstance(output.get("name"), str) for output in raw
    ):
        raise ProtocolError("'outputs' must be a list of objects with a 'name'")
    return [
        RequestedOutput(output["name"], _parameters(output, "output").get("binary_data") is True)
        for output in raw
    ]


def encode_infer_response(
    model_name: str,
    model_version: int,
    request_id: str | None,
    outputs: list[tuple[str, np.ndarray, bool]],
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers; ``outputs`` are ``(name, FP32 array,
    binary)``. Binary outputs follow the JSON header in order, as the extension says."""
    tensors = []
    binary_parts = []
    for name, array, binary in outputs:
        values = np.ascontiguousarray(array, dtype="<f4")
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(values.shape)}
        if binary:
            raw = values.tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        else:
            tensor["data"] = values.ravel().tolist()
        tensors.append(tensor)
    header: dict[str, Any] = {
        "model_name": model_name,
        "model_version": str(model_version),
        "outputs": tensors,
    }
    if request_id is not None:
        header["id"] = request_id
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if not binary_parts:
        return encoded, {"Content-Type": "application/json"}
    headers = {"Content-Type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(encoded))}
    return b"".join([encoded, *binary_parts]), headers
