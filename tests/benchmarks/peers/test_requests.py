"""The request bodies the peer benchmark sends, and how it reads each server's answer.

The v2 body is checked against the project's own protocol parser (the one cellsign serves
``/v2`` with), so the Triton rows and cellsign's v2 row send a body a v2 server accepts.
"""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from app.api.v2.protocol import encode_infer_response, parse_infer_request
from benchmarks.peers.requests import (
    HEADER_LENGTH,
    base64_json_request,
    cellsign_probabilities,
    json_probabilities,
    multipart_request,
    raw_request,
    v2_binary_body,
    v2_probabilities,
)

IMAGE = b"\xff\xd8\xff\xe0 not really a JPEG \x00\x00 but bytes all the same \xff\xd9"
PROBABILITIES = np.array([[0.1, 0.6, 0.3]], dtype=np.float32)


def _answer(status: int, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", "http://peer/"), **kwargs)  # type: ignore[arg-type]


def test_v2_binary_body_round_trips_through_the_protocol_parser() -> None:
    body, headers = v2_binary_body(IMAGE)
    parsed = parse_infer_request(body, headers[HEADER_LENGTH], max_json_bytes=4096)
    (tensor,) = parsed.inputs
    assert (tensor.name, tensor.datatype, tensor.shape, tensor.data) == (
        "image",
        "BYTES",
        (1, 1),
        [IMAGE],
    )
    assert [(output.name, output.binary) for output in parsed.outputs or []] == [
        ("probabilities", True)
    ]
    assert headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize("binary", [True, False])
def test_v2_probabilities_reads_binary_and_json_outputs(binary: bool) -> None:
    body, headers = encode_infer_response(
        "signs_classifier", 3, None, [("probabilities", PROBABILITIES, binary)]
    )
    response = _answer(200, content=body, headers=headers)
    np.testing.assert_array_equal(v2_probabilities(response), PROBABILITIES)


def test_v2_probabilities_skips_earlier_binary_outputs() -> None:
    codes = np.arange(4, dtype=np.float32).reshape(1, 4)
    body, headers = encode_infer_response(
        "m", 1, None, [("codes", codes, True), ("probabilities", PROBABILITIES, True)]
    )
    response = _answer(200, content=body, headers=headers)
    np.testing.assert_array_equal(v2_probabilities(response), PROBABILITIES)


def test_a_failed_answer_is_an_error_not_probabilities() -> None:
    response = _answer(500, json={"detail": "boom"})
    for read in (v2_probabilities, json_probabilities, cellsign_probabilities):
        with pytest.raises(httpx.HTTPStatusError):
            read(response)


def test_json_answers_single_and_batched() -> None:
    one = _answer(200, json={"class_id": 1, "probabilities": [0.1, 0.6, 0.3]})
    listed = _answer(200, json=[{"class_id": 1, "probabilities": [0.1, 0.6, 0.3]}])
    for response in (one, listed):
        np.testing.assert_allclose(json_probabilities(response), PROBABILITIES)


def test_cellsign_answer_in_class_order() -> None:
    prediction = {"label": "1", "probabilities": {"2": 0.3, "0": 0.1, "1": 0.6}}
    response = _answer(200, json={"model": {}, "predictions": [prediction]})
    np.testing.assert_allclose(cellsign_probabilities(response), PROBABILITIES)


def test_each_form_carries_the_image_unchanged() -> None:
    multipart = multipart_request(IMAGE, "/classify", "images", json_probabilities)
    assert multipart.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert IMAGE in multipart.body and b'name="images"' in multipart.body
    raw = raw_request(IMAGE, "/classify", json_probabilities)
    assert (raw.body, raw.headers) == (IMAGE, {"Content-Type": "image/jpeg"})
    encoded = base64_json_request(IMAGE, "/predict", json_probabilities)
    assert base64.b64decode(json.loads(encoded.body)["image"]) == IMAGE
