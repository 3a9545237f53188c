"""The v2 body codec on its own: JSON and binary tensors in, streamed and checked against a
model's limits before anything is counted or kept; JSON and binary outputs out."""

from __future__ import annotations

import base64
import json
import tempfile

import numpy as np
import pytest

from app.api.v2 import protocol
from app.api.v2.protocol import (
    HEADER_LENGTH,
    MAX_OUTPUTS,
    InferBodyReader,
    ProtocolError,
    TensorLimits,
    encode_infer_response,
    parse_infer_request,
)
from app.core.errors import PayloadTooLargeError
from app.settings import Settings
from contract.pixels import scale
from tests.app.api.v2.bodies import LIMITS, MAX_JSON, binary_body, bytes_element, tensor

HUGE = 2**64 - 1
PIXELS = [1, 4, 4, 3]  # one image at LIMITS' size


def parse(body: bytes, length: str | None, limits: TensorLimits = LIMITS):
    return parse_infer_request(body, length, MAX_JSON, limits)


def pixels_body(datatype: str = "FP32", **fields) -> tuple[bytes, str, np.ndarray]:
    values = np.linspace(0, 1, 48, dtype=np.float32).reshape(PIXELS)
    raw = values.tobytes() if datatype == "FP32" else (values * 255).astype(np.uint8).tobytes()
    fields.setdefault("size", len(raw))
    body, length = binary_body(tensor("images", datatype, PIXELS, **fields), raw)
    return body, length, values


def test_binary_fp32_pixels_come_back_as_the_array_of_their_shape() -> None:
    body, length, values = pixels_body()
    header = json.loads(body[: int(length)])
    header |= {"id": 7, "outputs": [{"name": "x", "parameters": {"binary_data": True}}]}
    body, length = binary_body(header, body[int(length) :])
    request = parse(body, length)
    (tensor_in,) = request.inputs
    assert (tensor_in.name, tensor_in.datatype, tensor_in.shape) == ("images", "FP32", (1, 4, 4, 3))
    assert tensor_in.data.dtype == np.float32
    np.testing.assert_array_equal(tensor_in.data, values)
    assert request.id == "7"
    assert [(o.name, o.binary) for o in request.outputs] == [("x", True)]
    assert request.binary_outputs is False


def test_uint8_pixels_are_scaled_as_training_scales_them() -> None:
    body, length, values = pixels_body("UINT8")
    expected = scale((values * 255).astype(np.uint8))
    np.testing.assert_array_equal(parse(body, length).inputs[0].data, expected)
    as_json = tensor("images", "UINT8", PIXELS, data=(values * 255).astype(np.uint8).tolist())
    np.testing.assert_array_equal(
        parse(json.dumps(as_json).encode(), None).inputs[0].data, expected
    )


@pytest.mark.parametrize("shape", [[3], [3, 1]])
def test_binary_bytes_elements_are_cut_by_their_lengths(shape: list[int]) -> None:
    elements = bytes_element(b"first") + bytes_element(b"") + bytes_element(b"third")
    body, length = binary_body(tensor("image", "BYTES", shape, size=len(elements)), elements)
    assert parse(body, length).inputs[0].data == [b"first", b"", b"third"]


def test_json_inputs_take_nested_or_flat_numbers_and_base64_bytes() -> None:
    values = np.arange(48, dtype=np.float32).reshape(PIXELS) / 48
    for data in (values.tolist(), values.ravel().tolist()):
        header = tensor("images", "FP32", PIXELS, data=data)
        np.testing.assert_array_equal(
            parse(json.dumps(header).encode(), None).inputs[0].data, values
        )
    for shape, data in (([2], ["aGk=", ""]), ([2, 1], [["aGk="], [""]])):
        header = tensor("image", "BYTES", shape, data=data)
        header["parameters"] = {"binary_data_output": True}
        request = parse(json.dumps(header).encode(), None)
        assert request.inputs[0].data == [b"hi", b""]
        assert request.outputs is None and request.binary_outputs is True


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 10_000])
def test_any_chunking_of_the_stream_reads_the_same_request(chunk: int) -> None:
    elements = bytes_element(b"a" * 10) + bytes_element(b"") + bytes_element(b"bcd")
    body, length = binary_body(tensor("image", "BYTES", [3, 1], size=len(elements)), elements)
    reader = InferBodyReader(length, str(len(body)), MAX_JSON, LIMITS)
    for start in range(0, len(body), chunk):
        reader.feed(body[start : start + chunk])
    assert reader.finish().inputs[0].data == [b"a" * 10, b"", b"bcd"]


def test_bytes_elements_over_the_spool_size_go_to_temporary_files() -> None:
    limits = TensorLimits(4, 4, 8, max_element_bytes=1000, spool_element_bytes=10)
    big = bytes(range(200)) * 2
    elements = bytes_element(b"small") + bytes_element(big)
    body, length = binary_body(tensor("image", "BYTES", [2], size=len(elements)), elements)
    reader = InferBodyReader(length, None, MAX_JSON, limits)
    for start in range(0, len(body), 7):
        reader.feed(body[start : start + 7])
    request = reader.finish()
    small, spooled = request.inputs[0].data
    assert small == b"small"
    assert not isinstance(spooled, bytes) and spooled.read() == big
    request.close()
    assert spooled.closed


def test_a_refused_read_closes_its_spooled_files(monkeypatch: pytest.MonkeyPatch) -> None:
    created = []
    make_file = tempfile.TemporaryFile

    def recorded() -> object:
        created.append(make_file())  # noqa: SIM115 (the reader closes it)
        return created[-1]

    monkeypatch.setattr(protocol.tempfile, "TemporaryFile", recorded)
    limits = TensorLimits(4, 4, 8, max_element_bytes=1000, spool_element_bytes=10)
    head, length = binary_body(tensor("image", "BYTES", [2], size=2 * 1004))
    reader = InferBodyReader(length, None, MAX_JSON, limits)
    reader.feed(head + bytes_element(b"x" * 500))
    with pytest.raises(PayloadTooLargeError, match="2000 bytes"):
        reader.feed((2000).to_bytes(4, "little"))
    assert len(created) == 1 and not created[0].closed
    reader.close()
    assert created[0].closed


def refused(header: dict, *parts: bytes) -> ProtocolError | PayloadTooLargeError:
    body, length = binary_body(header, *parts)
    with pytest.raises((ProtocolError, PayloadTooLargeError)) as raised:
        parse(body, length)
    return raised.value


@pytest.mark.parametrize(
    ("header", "status", "message"),
    [
        (tensor("images", "FP32", [HUGE] * 3_000, size=4), 400, "1 to 4 dimensions"),
        (tensor("images", "FP32", [HUGE, 4, 4, 3], size=4), 413, "over 18 digits images"),
        (tensor("images", "FP32", [9, 4, 4, 3], size=4), 413, "9 images in one request"),
        (tensor("images", "FP32", [1, HUGE, HUGE, 3], size=4), 400, "must have shape [N, 4, 4, 3]"),
        (tensor("images", "FP32", [1, 10**4000, 4, 3], size=4), 400, "must have shape"),
        (tensor("images", "FP32", [0, 4, 4, 3], size=0), 400, "N >= 1"),
        (tensor("images", "FP32", [1, 4, 4, 3, 1], size=4), 400, "1 to 4 dimensions"),
        (tensor("images", "FP32", [True, 4, 4, 3], size=4), 400, "non-negative integers"),
        (tensor("images", "FP32", [-1, 4, 4, 3], size=4), 400, "non-negative integers"),
        (tensor("images", "FP32", [1, 4, 4, 3.0], size=4), 400, "non-negative integers"),
        (tensor("image", "BYTES", [1, 2], size=4), 400, "[N] or [N, 1]"),
        (tensor("images", "FP32", PIXELS, size=191), 400, "not the 192 bytes"),
        (tensor("images", "FP32", PIXELS, size=HUGE), 400, "over 18 digits, not the 192"),
        (tensor("images", "UINT8", PIXELS, size=192), 400, "not the 48 bytes"),
        (tensor("images", "FP32", PIXELS, size=True), 400, "binary_data_size must be"),
        (tensor("images", "FP32", PIXELS, size=192.0), 400, "binary_data_size must be"),
        (tensor("images", "FP32", PIXELS, size=-1), 400, "binary_data_size must be"),
        (tensor("image", "BYTES", [2], size=2 * 1004 + 1), 413, "over the 2008 bytes"),
        (tensor("image", "BYTES", [2], size=HUGE), 413, "binary_data_size is a number"),
        (tensor("image", "BYTES", [2], size=7), 400, "too small for the 4-byte lengths"),
        (tensor("images", "INT32", PIXELS, size=4), 400, "datatype 'INT32' is not supported"),
        (tensor("images", "BYTES", PIXELS, size=4), 400, "datatype 'BYTES' is not supported"),
        (tensor("image", "FP32", [1], size=4), 400, "takes BYTES"),
        (tensor("pixels", "FP32", PIXELS, size=4), 400, "unknown input 'pixels'"),
        (tensor("x" * 10_000, "FP32", PIXELS, size=4), 400, "'xxxxxx"),
        (tensor("images", "FP32", PIXELS, size=192, data=[]), 400, "both 'data'"),
        (tensor("images", "FP32", PIXELS), 400, "neither 'data' nor"),
        ({"inputs": []}, 400, "non-empty list"),
        ({"inputs": {"name": "image"}}, 400, "non-empty list"),
        ({"inputs": [1]}, 400, "must be an object"),
        (
            {"inputs": tensor("image", "BYTES", [1], data=["aGk="])["inputs"] * 2},
            400,
            "exactly one",
        ),
        (tensor("image", "BYTES", [1], size=5) | {"id": [1]}, 400, "'id' must be"),
        (tensor("image", "BYTES", [1], size=5) | {"id": "i" * 257}, 400, "'id' must be"),
        (tensor("image", "BYTES", [1], size=5) | {"id": 10**30}, 400, "'id' must be"),
        (
            tensor("image", "BYTES", [1], size=5)
            | {"outputs": [{"name": "p"}] * (MAX_OUTPUTS + 1)},
            400,
            f"at most {MAX_OUTPUTS} objects",
        ),
        (tensor("image", "BYTES", [1], size=5) | {"parameters": []}, 400, "'parameters' must be"),
    ],
)
def test_the_structure_is_refused_before_anything_is_counted(
    header: dict, status: int, message: str
) -> None:
    error = refused(header, b"\0" * 5)
    assert error.status_code == status
    assert message in error.detail


@pytest.mark.parametrize("body", [b"[]", b"1", b'"inputs"', b"null"])
def test_the_request_must_be_a_json_object(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="must be a JSON object"):
        parse(body, None)


@pytest.mark.parametrize(
    "length", ["abc", "\u0661\u0662", "\u00b2", "9" * 5000, "-1", "", " 12", "+12", "1e3", "999"]
)
def test_a_header_length_that_is_not_a_byte_count_within_the_body_is_a_400(length: str) -> None:
    with pytest.raises(ProtocolError, match=HEADER_LENGTH):
        parse(b'{"inputs": []}' + b"\0" * 100, length)


def test_a_header_length_over_the_json_cap_is_a_413_before_any_byte_is_read() -> None:
    with pytest.raises(PayloadTooLargeError, match=f"over the {MAX_JSON} byte limit"):
        InferBodyReader(str(MAX_JSON + 1), None, MAX_JSON, LIMITS)
    with pytest.raises(PayloadTooLargeError, match="binary tensor extension"):
        InferBodyReader(None, str(MAX_JSON + 1), MAX_JSON, LIMITS)


def test_a_chunked_json_body_is_refused_once_it_passes_the_cap() -> None:
    reader = InferBodyReader(None, None, MAX_JSON, LIMITS)
    reader.feed(b" " * MAX_JSON)
    with pytest.raises(PayloadTooLargeError, match="over the 100000 byte limit"):
        reader.feed(b" ")


@pytest.mark.parametrize("depth", [5_000, 90_000])
def test_json_nested_past_the_parser_limit_is_a_400(depth: int) -> None:
    body = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(ProtocolError, match="nests deeper"):
        parse_infer_request(body, None, 200_000, TensorLimits())


def test_json_with_more_lists_than_any_request_is_refused_before_parsing() -> None:
    body = b'{"inputs": [], "x": [' + b"[]," * LIMITS.max_containers() + b"[]]}"
    with pytest.raises(ProtocolError, match="lists and objects"):
        parse(body, None)


def test_an_integer_too_long_to_read_is_a_400() -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        parse(b'{"inputs": [{"shape": [' + b"9" * 5000 + b"]}]}", None)


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP32", [0.5] * 47, "list of 48 values"),
        ("FP32", "not a list", "list of 48 values"),
        ("FP32", ["x"] * 48, "must be numbers"),
        ("FP32", [True] * 48, "must be numbers"),
        ("FP32", [None] * 48, "must be numbers"),
        ("FP32", [10**30] * 48, "must be numbers"),
        ("FP32", [[0.5] * 16] * 3, "list of 48 values"),
        ("FP32", [[[[[[[[[0.5]]]]]]]]], "must be numbers"),
        ("FP32", [[[0.5] * 3] * 4] * 3 + [[[0.5] * 3] * 4 + [[0.5]]], "list of 48 values"),
        ("UINT8", [256] * 48, "0-255"),
        ("UINT8", [-1] * 48, "0-255"),
        ("UINT8", [0.5] * 48, "0-255"),
    ],
)
def test_json_pixels_must_be_numbers_flat_or_nested_as_the_shape(
    datatype: str, data: object, message: str
) -> None:
    body = json.dumps(tensor("images", datatype, PIXELS, data=data)).encode()
    with pytest.raises(ProtocolError, match=message):
        parse(body, None)


def test_nested_json_pixels_of_a_ragged_shape_are_refused() -> None:
    ragged = [[[[0.5] * 3] * 4] * 3 + [[[0.5] * 3] * 3 + [[0.5] * 4]]]
    body = json.dumps(tensor("images", "FP32", PIXELS, data=ragged)).encode()
    with pytest.raises(ProtocolError, match="must be numbers"):
        parse(body, None)


@pytest.mark.parametrize(
    ("shape", "data", "error", "message"),
    [
        ([2], ["aGk="], ProtocolError, "1 elements for shape [2]"),
        ([1], ["%"], ProtocolError, "base64"),
        ([1], ["\u00e9"], ProtocolError, "base64"),
        ([1], [5], ProtocolError, "base64"),
        ([1], [["aGk="]], ProtocolError, "base64"),  # nesting only for [N, 1]
        ([1], ["A" * 1400], PayloadTooLargeError, "1000 byte limit of one image"),
    ],
)
def test_json_bytes_elements_must_be_base64_within_the_element_limit(
    shape: list[int], data: list, error: type, message: str
) -> None:
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(json.dumps(tensor("image", "BYTES", shape, data=data)).encode(), None)


def test_binary_data_size_needs_the_header_length() -> None:
    body = json.dumps(tensor("image", "BYTES", [1], size=4)).encode()
    with pytest.raises(ProtocolError, match=f"no {HEADER_LENGTH} header"):
        parse(body, None)


@pytest.mark.parametrize(
    ("elements", "size", "error", "message"),
    [
        ((1001).to_bytes(4, "little"), 2 * 1004, PayloadTooLargeError, "1001 bytes, over the 1000"),
        ((HUGE >> 32).to_bytes(4, "little"), 2 * 1004, PayloadTooLargeError, "over the 1000"),
        ((100).to_bytes(4, "little") + b"x" * 10, 14, ProtocolError, "runs past its data"),
        (bytes_element(b"ab") + b"\1\0", 8, ProtocolError, "truncated BYTES length prefix"),
        (bytes_element(b"abcd"), 8, ProtocolError, "1 BYTES elements for the 2"),
        (bytes_element(b"a") * 3, 15, ProtocolError, "end before its binary_data_size"),
    ],
)
def test_binary_bytes_elements_are_checked_as_their_lengths_arrive(
    elements: bytes, size: int, error: type, message: str
) -> None:
    header, length = binary_body(tensor("image", "BYTES", [2], size=size))
    reader = InferBodyReader(length, None, MAX_JSON, LIMITS)
    reader.feed(header)
    with pytest.raises(error, match=message):
        reader.feed(elements)  # the length prefix alone is refused: its bytes are not needed
        reader.finish()


def test_a_declared_body_past_what_the_header_announces_is_refused_before_its_binary() -> None:
    body, length, _ = pixels_body()
    reader = InferBodyReader(length, str(600 * 1024 * 1024), MAX_JSON, LIMITS)
    with pytest.raises(PayloadTooLargeError, match=f"past the {len(body)} that its JSON header"):
        reader.feed(body[: int(length)])


def test_a_streamed_body_past_what_the_header_announces_is_refused_at_the_first_extra_byte() -> (
    None
):
    body, length, _ = pixels_body()
    reader = InferBodyReader(length, None, MAX_JSON, LIMITS)
    reader.feed(body)
    with pytest.raises(PayloadTooLargeError, match="past the"):
        reader.feed(b"\0")
    json_only = json.dumps(tensor("image", "BYTES", [1], data=["aGk="])).encode()
    reader = InferBodyReader(str(len(json_only)), None, MAX_JSON, LIMITS)
    with pytest.raises(PayloadTooLargeError, match="past the"):
        reader.feed(json_only + b"extra")


def test_a_body_that_ends_early_is_a_400() -> None:
    body, length, _ = pixels_body()
    with pytest.raises(ProtocolError, match="announces"):
        InferBodyReader(length, str(len(body) - 1), MAX_JSON, LIMITS).feed(body[: int(length)])
    for cut in (int(length) - 1, len(body) - 1):
        reader = InferBodyReader(length, None, MAX_JSON, LIMITS)
        reader.feed(body[:cut])
        with pytest.raises(ProtocolError, match="the body ended after"):
            reader.finish()


def test_bytes_elements_over_the_request_byte_limit_are_refused_before_any_is_read() -> None:
    limits = TensorLimits(4, 4, 8, max_element_bytes=1000, max_request_bytes=1500)
    body, length = binary_body(tensor("image", "BYTES", [2], size=2 * 800 + 8))
    with pytest.raises(PayloadTooLargeError, match="1500 byte limit of one request's images"):
        parse(body, length, limits)


def test_the_default_limits_are_the_trained_models_and_the_settings_defaults() -> None:
    limits = TensorLimits()
    assert (limits.height, limits.width, limits.max_images) == (64, 64, 64)
    settings = Settings()
    assert (limits.max_element_bytes, limits.max_request_bytes) == (
        settings.max_upload_bytes,
        settings.max_request_bytes,
    )
    image = bytes_element(base64.b64decode("aGk="))
    body, length = binary_body(tensor("image", "BYTES", [1, 1], size=len(image)), image)
    assert parse_infer_request(body, length, max_json_bytes=4096).inputs[0].data == [b"hi"]


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
