"""Random and mutated v2 infer bodies, fed to the streaming reader in random chunks: it
either reads a request that fits the limits or refuses with the project's 400 or 413,
never any other exception."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api.v2.protocol import (
    IMAGE_INPUT,
    PIXELS_INPUT,
    InferBodyReader,
    InferRequest,
    ProtocolError,
)
from app.core.errors import PayloadTooLargeError
from tests.app.api.v2.bodies import LIMITS, MAX_JSON, binary_body, bytes_element, tensor

EXAMPLES = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
PIXELS = [1, LIMITS.height, LIMITS.width, 3]
FUZZ_LIMITS = dataclasses.replace(LIMITS, spool_element_bytes=8)  # larger elements spool

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=30,
)
# A header length of any text: digits of other scripts, signs, spaces, thousands of digits.
header_lengths = st.none() | st.text(max_size=8) | st.integers(0, 400).map(str)


def valid_bodies() -> st.SearchStrategy[tuple[bytes, str | None]]:
    """Bodies the reader accepts, in each form: binary pixels and elements, JSON."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, str | None]:
        form = draw(st.sampled_from(["fp32", "uint8", "bytes", "json-fp32", "json-bytes"]))
        count = draw(st.integers(1, 2))
        shape = [count, *PIXELS[1:]]
        if form in ("fp32", "uint8"):
            datatype = form.upper()
            item = 4 if form == "fp32" else 1
            raw = draw(st.binary(min_size=48 * item * count, max_size=48 * item * count))
            return binary_body(tensor(PIXELS_INPUT, datatype, shape, size=len(raw)), raw)
        if form == "bytes":
            elements = b"".join(bytes_element(draw(st.binary(max_size=20))) for _ in range(count))
            header = tensor(IMAGE_INPUT, "BYTES", [count, 1], size=len(elements))
            return binary_body(header, elements)
        if form == "json-fp32":
            values = np.zeros(shape, np.float32).tolist()
            return json.dumps(tensor(PIXELS_INPUT, "FP32", shape, data=values)).encode(), None
        return json.dumps(
            tensor(IMAGE_INPUT, "BYTES", [count], data=["aGk="] * count)
        ).encode(), None

    return build()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A valid body with a few bytes changed, cut, repeated or inserted, and perhaps another
    header length."""
    body, length = draw(valid_bodies())
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        length = draw(header_lengths)
    return bytes(data), length


@st.composite
def random_structures(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A request whose fields hold any JSON: the structure checks must catch each of them."""
    header: dict[str, Any] = tensor(
        draw(st.sampled_from([IMAGE_INPUT, PIXELS_INPUT, "x"])),
        draw(st.sampled_from(["BYTES", "FP32", "UINT8", "INT32"])),
        draw(st.lists(st.integers(-1, 2**65), max_size=6) | json_values),
    )
    field = draw(st.sampled_from(["data", "parameters", "shape", "name", "datatype", None]))
    if field is not None:
        header["inputs"][0][field] = draw(json_values)
    for key in draw(st.lists(st.sampled_from(["id", "outputs", "parameters", "inputs"]))):
        header[key] = draw(json_values)
    binary = draw(st.binary(max_size=64))
    body, length = binary_body(header, binary)
    return body, draw(st.sampled_from([length, None]))


def read(body: bytes, length: str | None, cuts: list[int], declared: bool) -> None:
    """Feed ``body`` in the pieces ``cuts`` makes; only a request that fits, a 400 or a 413."""
    reader = None
    try:
        reader = InferBodyReader(
            length, str(len(body)) if declared else None, MAX_JSON, FUZZ_LIMITS
        )
        start = 0
        for cut in [*sorted(cuts), len(body)]:
            reader.feed(body[start:cut])
            start = max(start, cut)
        request = reader.finish()
    except (ProtocolError, PayloadTooLargeError) as error:
        assert error.status_code in (400, 413)
        assert error.detail
        if reader is not None:
            reader.close()
        return
    assert_fits(request)


def assert_fits(request: InferRequest) -> None:
    (tensor_in,) = request.inputs
    count = tensor_in.shape[0]
    assert 1 <= count <= LIMITS.max_images
    if tensor_in.name == PIXELS_INPUT:
        assert tensor_in.shape == (count, *LIMITS.pixel_shape)
        assert isinstance(tensor_in.data, np.ndarray) and tensor_in.data.dtype == np.float32
        assert tensor_in.data.shape == tensor_in.shape
    else:
        assert tensor_in.name == IMAGE_INPUT and tensor_in.shape[1:] in ((), (1,))
        assert isinstance(tensor_in.data, list) and len(tensor_in.data) == count
        for element in tensor_in.data:
            size = len(element) if isinstance(element, bytes) else len(element.read())
            assert size <= FUZZ_LIMITS.max_element_bytes
    request.close()


cuts = st.lists(st.integers(0, 2000), max_size=6)


@EXAMPLES
@given(valid_bodies(), cuts, st.booleans())
def test_valid_bodies_are_read_whatever_the_chunks(
    case: tuple[bytes, str | None], pieces: list[int], declared: bool
) -> None:
    body, length = case
    reader = InferBodyReader(length, str(len(body)) if declared else None, MAX_JSON, FUZZ_LIMITS)
    start = 0
    for cut in [*sorted(pieces), len(body)]:
        reader.feed(body[start:cut])
        start = max(start, cut)
    assert_fits(reader.finish())


@pytest.mark.parametrize(
    "bodies",
    [mutated(), random_structures(), st.tuples(st.binary(max_size=400), header_lengths)],
    ids=["mutated", "any-json-in-any-field", "random-bytes"],
)
@EXAMPLES
@given(data=st.data(), pieces=cuts, declared=st.booleans())
def test_hostile_bodies_are_read_or_refused_with_400_or_413(
    bodies: st.SearchStrategy[tuple[bytes, str | None]],
    data: st.DataObject,
    pieces: list[int],
    declared: bool,
) -> None:
    """Three kinds of hostile body, each with its own ``EXAMPLES``; the body is drawn in
    the test because ``given`` cannot take a parametrized strategy."""
    read(*data.draw(bodies, label="body and header length"), pieces, declared)
