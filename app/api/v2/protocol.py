"""Open Inference Protocol (KServe v2) inference bodies: read requests, encode responses.

Both the JSON form and Triton's binary tensor extension are handled. With the extension the
body is the JSON header (its length in the ``Inference-Header-Content-Length`` header)
followed by the raw tensor, the input naming its byte count in
``parameters.binary_data_size``. Raw FP32 is little-endian; each BYTES element is a 4-byte
little-endian length and then the bytes. In the JSON form a BYTES element is a string, which
here must be base64 (image bytes are not text).

The models take one input, either ``image`` (BYTES ``[N]`` or ``[N, 1]``: encoded files) or
``images`` (FP32 or UINT8 ``[N, H, W, 3]`` pixels), so a request is read against those
``TensorLimits`` as it streams in (``InferBodyReader``), each step bounded before the next
one spends anything:

1. the numbers in the headers are read by ``whole_number`` (ASCII, at most 18 digits);
2. the JSON part is at most ``max_json_bytes``, holds at most as many lists and objects as
   the largest request needs, and is parsed with the parser's nesting limit caught;
3. its structure is checked before any arithmetic on it: one input, its name and datatype,
   a rank of at most ``MAX_RANK``, each dimension on its own against its bound (so no
   product of unbounded integers is ever formed), ``binary_data_size`` against the shape;
4. only then are the binary bytes taken, exactly as many as announced: a body that runs
   past them is refused (413) at the first extra byte, and each BYTES element's length
   prefix is checked against ``max_element_bytes`` before its bytes are kept.

So what a request holds is its JSON part (capped) plus the binary size its validated header
announced, and of that only pixels and BYTES elements up to ``spool_element_bytes`` in
memory: a larger element goes to a temporary file as it arrives, as Starlette spools a large
form part. Every malformed body is a ``ProtocolError`` (400) or a ``PayloadTooLargeError``
(413) naming the limit it broke.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from app.api.numbers import MAX_DIGITS, whole_number
from app.core.errors import PayloadTooLargeError, ServiceError
from contract.pixels import scale

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
IMAGE_INPUT = "image"  # BYTES [N] or [N, 1]: encoded image files
PIXELS_INPUT = "images"  # FP32 in [0, 1] or UINT8 in [0, 255], [N, H, W, 3]
PIXEL_TYPES = {"FP32": "<f4", "UINT8": "u1"}  # datatype -> how its binary form is laid out
# A JSON part costs about 60 ms of CPU and 25 MB per MiB to parse at worst (short floats),
# so it stays small; larger tensors belong in the binary part, which costs what it weighs.
MAX_JSON_BYTES = 2 * 1024 * 1024
MAX_RANK = 4  # [N, H, W, 3]
MAX_OUTPUTS = 8  # more than any model has; each one asked for is a model call
MAX_ID_CHARS = 256
# Lists and objects a header needs besides the nested pixel data: the request, its inputs
# and outputs, their shapes and parameters.
_HEADER_CONTAINERS = 64
_LENGTH_PREFIX = struct.Struct("<I")
_SHOWN_CHARS = 80  # of a client's text quoted back in an error


class ProtocolError(ServiceError):
    """The inference request breaks the protocol or the model's tensor contract."""

    status_code = 400


@dataclass(frozen=True)
class TensorLimits:
    """What one model version takes: ``images`` at ``height`` x ``width``, at most
    ``max_images`` images a request, ``max_element_bytes`` per encoded image and
    ``max_request_bytes`` for all of them (their 4-byte lengths aside). The
    defaults are the trained models' input size and the settings' defaults (for tools and
    tests; the server builds them from the model and its settings)."""

    height: int = 64
    width: int = 64
    max_images: int = 64
    max_element_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 20 * 1024 * 1024
    spool_element_bytes: int = 1024 * 1024  # a larger BYTES element goes to a file

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    def max_containers(self) -> int:
        """Lists and objects the largest JSON request holds: the pixel data nested as
        ``[N][H][W][3]`` has ``N * (H * W + H + 1) + 1`` lists."""
        per_image = self.height * self.width + self.height + 1
        return self.max_images * per_image + 1 + _HEADER_CONTAINERS

    def describe(self) -> str:
        return (
            f"{IMAGE_INPUT!r} (BYTES [N, 1] or [N]) or {PIXELS_INPUT!r} "
            f"(FP32 or UINT8 [N, {self.height}, {self.width}, 3])"
        )


Element = bytes | IO[bytes]


@dataclass(frozen=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    # Pixels: float32 array of ``shape`` in [0, 1] (UINT8 already scaled); BYTES: the
    # flat elements, each its bytes or (over ``spool_element_bytes``) a temporary file
    # holding them, at its start.
    data: np.ndarray | list[Element]


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[InputTensor]  # exactly one: the models take one input
    outputs: list[RequestedOutput] | None  # None: every output
    binary_outputs: bool  # the request-wide ``binary_data_output`` parameter

    def close(self) -> None:
        """Delete the temporary files of spooled BYTES elements."""
        for tensor in self.inputs:
            if isinstance(tensor.data, list):
                _close_files(tensor.data)


@dataclass(frozen=True)
class _Header:
    """The JSON part, checked: everything but the input's data."""

    id: str | None
    outputs: list[RequestedOutput] | None
    binary_outputs: bool
    name: str
    datatype: str
    shape: tuple[int, ...]  # every dimension within its bound
    data: object  # the JSON ``data``; None when the tensor is binary
    binary_size: int  # 0 when the tensor is JSON


def parse_infer_request(
    body: bytes,
    header_length: str | None,
    max_json_bytes: int,
    limits: TensorLimits | None = None,
) -> InferRequest:
    """A whole body already in memory, read as ``InferBodyReader`` reads a stream."""
    reader = InferBodyReader(
        header_length, str(len(body)), max_json_bytes, limits or TensorLimits()
    )
    reader.feed(body)
    return reader.finish()


class InferBodyReader:
    """Reads a request body chunk by chunk (``feed``, then ``finish``), refusing it as soon
    as the bytes seen break a limit, so a refused body is never read or held whole.

    ``header_length`` is the ``Inference-Header-Content-Length`` header (None: the body is
    all JSON), ``content_length`` the declared body size (None: chunked).
    """

    def __init__(
        self,
        header_length: str | None,
        content_length: str | None,
        max_json_bytes: int,
        limits: TensorLimits,
    ) -> None:
        self._limits = limits
        self._max_json = max_json_bytes
        self._declared = whole_number(content_length)
        self._json_size: int | None = None
        if header_length is not None:
            size = whole_number(header_length)
            if size is None or (self._declared is not None and size > self._declared):
                raise ProtocolError(
                    f"{HEADER_LENGTH} must be a byte count within the body "
                    f"(1 to {MAX_DIGITS} ASCII digits)"
                )
            self._json_size = size
        announced = self._json_size if self._json_size is not None else self._declared
        if announced is not None:
            self._check_json_size(announced, exact=True)
        self._json_parts: list[bytes] = []
        self._json_received = 0
        self._header: _Header | None = None
        self._binary: _Binary | None = None

    def close(self) -> None:
        """Delete the temporary files of an unfinished read (a refused body)."""
        if self._binary is not None:
            self._binary.close()

    @property
    def json_bytes(self) -> int:
        """Bytes of the JSON part received so far: what parsing it may cost grows with it."""
        return self._json_received

    def parses_with(self, size: int) -> bool:
        """Whether feeding ``size`` more bytes completes a JSON part announced by
        ``Inference-Header-Content-Length``, and so parses it."""
        return (
            self._header is None
            and self._json_size is not None
            and self._json_received + size >= self._json_size
        )

    @property
    def json_size(self) -> int | None:
        """The JSON part's announced size; None when the body is all JSON."""
        return self._json_size

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body (the one that completes the JSON part parses and
        checks it)."""
        view = memoryview(chunk)
        if self._header is None:
            if self._json_size is None:  # all JSON: it ends with the body
                self._json_received += len(view)
                self._check_json_size(self._json_received, exact=False)
                self._json_parts.append(chunk)
                return
            wanted = self._json_size - self._json_received
            self._json_parts.append(bytes(view[:wanted]))
            self._json_received += min(wanted, len(view))
            view = view[wanted:]
            if self._json_received < self._json_size:
                return
            self._start_binary()
        assert self._binary is not None
        if len(view):
            self._binary.feed(view)

    def finish(self) -> InferRequest:
        """The request, once the body has ended (a JSON tensor is read here)."""
        if self._header is None:
            if self._json_size is not None and self._json_received < self._json_size:
                raise ProtocolError(
                    f"the body ended after {self._json_received} of the {self._json_size} "
                    f"bytes of the JSON header ({HEADER_LENGTH})"
                )
            self._start_binary()
        assert self._header is not None and self._binary is not None
        header = self._header
        tensor = InputTensor(header.name, header.datatype, header.shape, self._binary.finish())
        return InferRequest(header.id, [tensor], header.outputs, header.binary_outputs)

    def _check_json_size(self, size: int, exact: bool) -> None:
        """``size``: the JSON part's announced size (``exact``), or what has arrived."""
        if size > self._max_json:
            raise PayloadTooLargeError(
                f"the JSON part is {'' if exact else 'over '}{size} bytes, "
                f"over the {self._max_json} byte limit of a JSON request; send large tensors "
                "with the binary tensor extension"
            )

    def _start_binary(self) -> None:
        """Check the complete JSON part, then expect exactly the binary bytes it announces."""
        raw = b"".join(self._json_parts)
        self._json_parts = []
        header = _parse_header(raw, self._limits)
        if header.binary_size and self._json_size is None:
            raise ProtocolError(
                f"input {header.name!r} has binary_data_size but the request has no "
                f"{HEADER_LENGTH} header saying where its JSON part ends"
            )
        total = len(raw) + header.binary_size
        if self._declared is not None and self._declared > total:
            raise PayloadTooLargeError(_past_announced(self._declared, total))
        if self._declared is not None and self._declared < total:
            raise ProtocolError(
                f"the body is {self._declared} bytes but its JSON header announces {total} "
                f"({HEADER_LENGTH} + binary_data_size)"
            )
        self._header = header
        self._binary = _Binary(header, self._limits, total)


def _past_announced(size: int | str, total: int) -> str:
    return (
        f"the body is {size} bytes, past the {total} that its JSON header announces "
        f"({HEADER_LENGTH} + binary_data_size)"
    )


class _Binary:
    """The input's tensor: its binary bytes as they stream in, then the tensor itself."""

    def __init__(self, header: _Header, limits: TensorLimits, total: int) -> None:
        self._header = header
        self._limits = limits
        self._total = total  # of the whole body, for the error message
        self._received = 0
        # Pixels: one buffer of the announced size. BYTES: the finished elements and the
        # current one's length prefix (which may arrive split) and pieces.
        self._pixels = bytearray(header.binary_size) if header.datatype in PIXEL_TYPES else None
        self._elements: list[Element] = []
        self._prefix = bytearray()
        self._pieces: list[bytes] = []
        self._file: IO[bytes] | None = None  # where the current element goes when spooled
        self._left = 0  # bytes of the current element still to come

    def close(self) -> None:
        _close_files([*self._elements, *([self._file] if self._file else [])])

    def feed(self, view: memoryview) -> None:
        size = self._header.binary_size
        if self._received + len(view) > size:
            seen = self._total - size + self._received + len(view)
            raise PayloadTooLargeError(_past_announced(f"over {seen}", self._total))
        if self._pixels is not None:
            self._pixels[self._received : self._received + len(view)] = view
        else:
            self._feed_elements(view)
        self._received += len(view)

    def _feed_elements(self, view: memoryview) -> None:
        """Split BYTES elements off ``view``: each length prefix is checked before any of
        its element is kept, and no more than N elements are taken (a loop per element,
        never per byte)."""
        name, count = self._header.name, self._header.shape[0]
        end = self._received + len(view)  # where ``view`` ends within the binary part
        while len(view):
            if self._left:
                piece, view = view[: self._left], view[self._left :]
                if self._file is not None:
                    self._file.write(piece)  # into the page cache: a chunk's memcpy
                else:
                    self._pieces.append(bytes(piece))
                self._left -= len(piece)
                if not self._left:
                    self._end_element()
                continue
            if len(self._elements) == count:
                raise ProtocolError(
                    f"input {name!r}: its {count} BYTES elements end before its "
                    "binary_data_size does"
                )
            taken = 4 - len(self._prefix)
            self._prefix += view[:taken]
            view = view[taken:]
            if len(self._prefix) < 4:
                return
            (length,) = _LENGTH_PREFIX.unpack(self._prefix)
            self._prefix.clear()
            if length > self._limits.max_element_bytes:
                raise PayloadTooLargeError(
                    f"input {name!r}: element {len(self._elements)} is {length} bytes, over "
                    f"the {self._limits.max_element_bytes} byte limit of one image"
                )
            if length > self._header.binary_size - (end - len(view)):
                raise ProtocolError(f"input {name!r}: a BYTES element runs past its data")
            self._left = length
            if length > self._limits.spool_element_bytes:
                self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            elif not length:
                self._end_element()

    def _end_element(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._elements.append(self._file)
            self._file = None
        else:
            self._elements.append(b"".join(self._pieces))
            self._pieces = []

    def finish(self) -> np.ndarray | list[Element]:
        header = self._header
        if self._received < header.binary_size:
            raise ProtocolError(
                f"the body ended after {self._total - header.binary_size + self._received} "
                f"of the {self._total} bytes its JSON header announces "
                f"({HEADER_LENGTH} + binary_data_size)"
            )
        if header.binary_size == 0:
            return _json_tensor(header, self._limits)
        if self._pixels is not None:
            return _pixels(header, np.frombuffer(self._pixels, PIXEL_TYPES[header.datatype]))
        if self._prefix:
            raise ProtocolError(f"input {header.name!r}: truncated BYTES length prefix")
        if len(self._elements) != header.shape[0]:
            raise ProtocolError(
                f"input {header.name!r}: {len(self._elements)} BYTES elements for the "
                f"{header.shape[0]} of its shape"
            )
        return self._elements


def _parse_header(raw: bytes, limits: TensorLimits) -> _Header:
    """The JSON part, its structure checked against ``limits`` before anything is counted."""
    containers = raw.count(b"[") + raw.count(b"{")
    if containers > limits.max_containers():
        raise ProtocolError(
            f"the JSON holds {containers} lists and objects, more than the "
            f"{limits.max_containers()} of the largest request this model takes"
        )
    try:
        header = json.loads(raw)
    except RecursionError:
        raise ProtocolError("the JSON nests deeper than any request needs") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, too long an integer
        raise ProtocolError(f"the request is not JSON: {_shown(str(error))}") from None
    if not isinstance(header, dict):
        raise ProtocolError("the request must be a JSON object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list")
    if len(raw_inputs) != 1:
        raise ProtocolError(
            f"send exactly one input, {limits.describe()}; got {len(raw_inputs)} inputs"
        )
    tensor = raw_inputs[0]
    if not isinstance(tensor, dict):
        raise ProtocolError("input 0 must be an object")
    name, datatype = tensor.get("name"), tensor.get("datatype")
    if name not in (IMAGE_INPUT, PIXELS_INPUT):
        raise ProtocolError(f"unknown input {_quoted(name)}; the model takes {limits.describe()}")
    datatypes = ("BYTES",) if name == IMAGE_INPUT else tuple(PIXEL_TYPES)
    if datatype not in datatypes:
        raise ProtocolError(
            f"input {name!r}: datatype {_quoted(datatype)} is not supported; it takes "
            f"{' or '.join(datatypes)}"
        )
    shape = _shape(name, tensor.get("shape"), limits)
    size = _parameters(tensor, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise ProtocolError(f"input {name!r} has both 'data' and binary_data_size")
        _check_binary_size(name, datatype, shape, size, limits)
    elif "data" not in tensor:
        raise ProtocolError(f"input {name!r} has neither 'data' nor binary_data_size")
    request_id = header.get("id")
    if not (
        request_id is None
        or (isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS)
        or (type(request_id) is int and abs(request_id) < 10**MAX_DIGITS)
    ):
        raise ProtocolError(f"'id' must be a string of at most {MAX_ID_CHARS} characters")
    return _Header(
        id=None if request_id is None else str(request_id),
        outputs=_requested_outputs(header.get("outputs")),
        binary_outputs=_parameters(header, "request").get("binary_data_output") is True,
        name=name,
        datatype=datatype,
        shape=shape,
        data=tensor.get("data"),
        binary_size=size or 0,
    )


def _shape(name: str, shape: object, limits: TensorLimits) -> tuple[int, ...]:
    """The shape, each dimension checked on its own: N within ``max_images``, the others
    equal to the model's. Nothing is multiplied before that, so a dimension of any size
    costs one comparison."""
    if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_RANK:
        raise ProtocolError(f"input {name!r}: 'shape' must be a list of 1 to {MAX_RANK} dimensions")
    if not all(type(dimension) is int and dimension >= 0 for dimension in shape):
        raise ProtocolError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    count = shape[0]
    if count > limits.max_images:
        raise PayloadTooLargeError(
            f"{_number(count)} images in one request; at most {limits.max_images} allowed"
        )
    rest = tuple(shape[1:])
    if name == IMAGE_INPUT:
        if rest not in ((), (1,)) or not count:
            raise ProtocolError(
                f"input {name!r} must have shape [N] or [N, 1] with N >= 1, got {_dims(shape)}"
            )
    elif rest != limits.pixel_shape or not count:
        raise ProtocolError(
            f"input {name!r} must have shape [N, {limits.height}, {limits.width}, 3] with "
            f"N >= 1, got {_dims(shape)}"
        )
    return (count, *rest)


def _check_binary_size(
    name: str, datatype: str, shape: tuple[int, ...], size: object, limits: TensorLimits
) -> None:
    """``binary_data_size`` against the (already bounded) shape: exactly its bytes for
    pixels; for BYTES at least the N length prefixes and at most N images' worth."""
    if type(size) is not int or size < 0:
        raise ProtocolError(f"input {name!r}: binary_data_size must be a non-negative integer")
    count = shape[0]
    if datatype in PIXEL_TYPES:
        item = np.dtype(PIXEL_TYPES[datatype]).itemsize
        expected = int(np.prod(shape)) * item
        if size != expected:
            raise ProtocolError(
                f"input {name!r}: binary_data_size is {_number(size)}, not the {expected} bytes "
                f"of {datatype} {list(shape)}"
            )
        return
    most = count * (limits.max_element_bytes + 4)
    if size > most:
        raise PayloadTooLargeError(
            f"input {name!r}: binary_data_size is {_number(size)}, over the {most} bytes of "
            f"{count} images of at most {limits.max_element_bytes} bytes (and their 4-byte "
            "lengths)"
        )
    if size > limits.max_request_bytes + 4 * count:
        raise PayloadTooLargeError(
            f"input {name!r}: binary_data_size is {size}, over the {limits.max_request_bytes} "
            "byte limit of one request's images (and their 4-byte lengths)"
        )
    if size < 4 * count:
        raise ProtocolError(
            f"input {name!r}: binary_data_size is {size}, too small for the 4-byte lengths "
            f"of {count} elements"
        )


def _parameters(holder: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = holder.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError(f"{where}: 'parameters' must be an object")
    return parameters


def _json_tensor(header: _Header, limits: TensorLimits) -> np.ndarray | list[Element]:
    """The input from its JSON ``data``, which the JSON size cap already bounds."""
    if header.datatype == "BYTES":
        return _json_elements(header, limits)
    data, shape = header.data, header.shape
    # Flat, or nested as the shape: the lengths at the top say which before numpy looks.
    count = int(np.prod(shape))
    if not isinstance(data, list) or len(data) not in (count, shape[0]):
        given = len(data) if isinstance(data, list) else "not a list"
        raise ProtocolError(
            f"input {header.name!r}: 'data' must be a list of {count} values (or nested as "
            f"{list(shape)}), got {given}"
        )
    try:
        values = np.asarray(data)  # ragged or deeper than numpy's 64 dimensions: ValueError
    except (ValueError, TypeError, OverflowError, RecursionError):
        values = None
    if values is None or values.dtype.kind not in "iuf" or values.shape not in ((count,), shape):
        raise ProtocolError(
            f"input {header.name!r}: 'data' must be numbers, {count} of them, flat or nested "
            f"as {list(shape)}"
        )
    if header.datatype == "UINT8":
        if values.dtype.kind == "f" or (
            values.size and not 0 <= values.min() <= values.max() <= 255
        ):
            raise ProtocolError(f"input {header.name!r}: UINT8 'data' must be whole numbers 0-255")
        return _pixels(header, values.astype(np.uint8))
    with np.errstate(over="ignore"):  # a value past float32 becomes inf: refused as such
        return _pixels(header, values.astype(np.float32))


def _pixels(header: _Header, values: np.ndarray) -> np.ndarray:
    """``values`` (FP32 or UINT8, any layout) as float32 pixels of the header's shape."""
    values = values.reshape(header.shape)
    if header.datatype == "UINT8":
        return scale(values)
    return values.astype(np.float32, copy=False)


def _json_elements(header: _Header, limits: TensorLimits) -> list[Element]:
    """BYTES elements from JSON: base64 strings, flat or as ``[[s], [s], ...]``."""
    name, count, data = header.name, header.shape[0], header.data
    if not isinstance(data, list) or len(data) != count:
        given = len(data) if isinstance(data, list) else "not a list"
        raise ProtocolError(f"input {name!r}: {given} elements for shape {list(header.shape)}")
    most_chars = 4 * (limits.max_element_bytes // 3 + 1)
    elements: list[Element] = []
    for position, element in enumerate(data):
        if isinstance(element, list) and len(element) == 1 and header.shape[1:] == (1,):
            element = element[0]
        if isinstance(element, str) and len(element) > most_chars:
            raise PayloadTooLargeError(
                f"input {name!r}: element {position} is over the "
                f"{limits.max_element_bytes} byte limit of one image"
            )
        try:
            if not isinstance(element, str):
                raise TypeError
            elements.append(base64.b64decode(element, validate=True))
        except (binascii.Error, TypeError, ValueError):
            raise ProtocolError(
                f"input {name!r}: in JSON each BYTES element must be a base64 string "
                "(or send the binary tensor extension)"
            ) from None
    return elements


def _close_files(elements: Sequence[Element]) -> None:
    for element in elements:
        if not isinstance(element, bytes):
            element.close()


def _requested_outputs(raw: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or len(raw) > MAX_OUTPUTS
        or not all(
            isinstance(output, dict) and isinstance(output.get("name"), str) for output in raw
        )
    ):
        raise ProtocolError(
            f"'outputs' must be a list of at most {MAX_OUTPUTS} objects with a 'name'"
        )
    return [
        RequestedOutput(output["name"], _parameters(output, "output").get("binary_data") is True)
        for output in raw
    ]


def _number(value: int) -> str:
    """A client's integer for an error message: in full only when short (printing one of
    thousands of digits costs quadratic time, and is no help)."""
    return str(value) if value < 10**MAX_DIGITS else f"a number of over {MAX_DIGITS} digits"


def _dims(shape: Sequence[int]) -> str:
    return "[" + ", ".join(_number(dimension) for dimension in shape) + "]"


def _quoted(value: object) -> str:
    """A client's name or type for an error message, cut short."""
    return _shown(repr(value)) if isinstance(value, str) else f"of type {type(value).__name__}"


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


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
