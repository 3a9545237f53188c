"""The v2 body codec on its own: JSON and binary tensors in, JSON and binary outputs out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.api.v2_protocol import (
    HEADER_LENGTH,
    ProtocolError,
    encode_infer_response,
    parse_infer_request,
)
from app.core.errors import PayloadTooLargeError

LIMIT = 1_000_000


def binary_body(header: dict, *parts: bytes) -> tuple[bytes, str]:
    encoded = json.dumps(header).encode()
    return encoded + b"".join(parts), str(len(encoded))


def bytes_element(data: bytes) -> bytes:
    return len(data).to_bytes(4, "little") + data


def test_binary_inputs_are_cut_in_order_by_their_sizes() -> None:
    pixels = np.arange(6, dtype="<f4")
    elements = bytes_element(b"first") + bytes_element(b"") + bytes_element(b"third")
    header = {
        "id": 7,
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2, 3]}
            | {"parameters": {"binary_data_size": 24}},
            {"name": "b", "datatype": "BYTES", "shape": [3, 1]}
            | {"parameters": {"binary_data_size": len(elements)}},
        ],
        "outputs": [{"name": "x", "parameters": {"binary_data": True}}, {"name": "y"}],
    }
    body, length = binary_body(header, pixels.tobytes(), elements)
    request = parse_infer_request(body, length, LIMIT)
    assert request.id == "7"
    np.testing.assert_array_equal(request.inputs[0].data, pixels.reshape(2, 3))
    assert request.inputs[1].data == [b"first", b"", b"third"]
    assert [(o.name, o.binary) for o in request.outputs] == [("x", True), ("y", False)]
    assert request.binary_outputs is False


def test_json_inputs_take_nested_numbers_and_base64_bytes() -> None:
    header = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [[0.5, 1]]},
            {"name": "b", "datatype": "BYTES", "shape": [1], "data": ["aGk="]},
        ],
        "parameters": {"binary_data_output": True},
    }
    request = parse_infer_request(json.dumps(header).encode(), None, LIMIT)
    np.testing.assert_array_equal(request.inputs[0].data, [[0.5, 1.0]])
    assert request.inputs[1].data == [b"hi"]
    assert request.outputs is None and request.binary_outputs is True


@pytest.mark.parametrize(
    ("inputs", "tail", "message"),
    [
        ([{"name": "a", "datatype": "FP32", "shape": [3], "data": [1, 2]}], b"", "2 values"),
        ([{"name": "a", "datatype": "FP32", "shape": [1], "data": ["x"]}], b"", "numbers"),
        ([{"name": "a", "datatype": "INT8", "shape": [1], "data": [1]}], b"", "not supported"),
        ([{"name": "a", "datatype": "FP32", "shape": [-1], "data": []}], b"", "non-negative"),
        ([{"name": "a", "datatype": "FP32", "shape": [1]}], b"", "neither"),
        ([{"name": "a", "datatype": "BYTES", "shape": [2], "data": ["aGk="]}], b"", "1 elements"),
        (
            [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [1],
                    "parameters": {"binary_data_size": 4},
                }
            ],
            b"\0\0\0\0extra",
            "belong to no input",
        ),
        (
            [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [2],
                    "parameters": {"binary_data_size": 4},
                }
            ],
            b"\0\0\0\0",
            "4 bytes for 2 FP32",
        ),
        (
            [
                {
                    "name": "a",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 3},
                }
            ],
            b"\1\0\0",
            "truncated BYTES length",
        ),
    ],
)
def test_malformed_tensors_are_refused(inputs: list, tail: bytes, message: str) -> None:
    body, length = binary_body({"inputs": inputs}, tail)
    with pytest.raises(ProtocolError, match=message):
        parse_infer_request(body, length, LIMIT)


def test_a_json_part_over_the_limit_is_refused_before_parsing() -> None:
    body = b'{"inputs": [' + b"1," * 600 + b"1]}"
    with pytest.raises(PayloadTooLargeError, match="binary tensor extension"):
        parse_infer_request(body, None, max_json_bytes=1000)


def test_header_length_must_fit_the_body() -> None:
    with pytest.raises(ProtocolError, match=HEADER_LENGTH):
        parse_infer_request(b"{}", "3", LIMIT)


def test_response_puts_binary_outputs_after_the_json_header() -> None:
    first = np.array([[0.25, 0.75]], np.float32)
    second = np.array([1.5], np.float32)
    body, headers = encode_infer_response(
        "m", 3, "req-1", [("p", first, True), ("q", second, False)]
    )
    length = int(headers[HEADER_LENGTH])
    header = json.loads(body[:length])
    assert header["model_version"] == "3" and header["id"] == "req-1"
    assert header["outputs"][0] == {
        "name": "p",
        "datatype": "FP32",
        "shape": [1, 2],
        "parameters": {"binary_data_size": 8},
    }
    assert header["outputs"][1]["data"] == [1.5]
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f4"), [0.25, 0.75])
    plain, plain_headers = encode_infer_response("m", 3, None, [("q", second, False)])
    assert HEADER_LENGTH not in plain_headers and "id" not in json.loads(plain)
