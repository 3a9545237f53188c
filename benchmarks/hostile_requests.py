"""The hostile request corpus of issue #25, and a raw HTTP/1.1 sender that survives it.

Every attack is one :class:`HostileRequest`: its name, the input kind it goes through
(a multipart part, a raw body, a v2 JSON body, a v2 binary body, or a number in a header,
path or query), method, path, headers, body, and the statuses a correct server may answer.
Large bodies are :class:`Body` values made of repeated segments, so a 600 MB upload costs
the client a few bytes of memory and streams out in chunks; the server is expected to
refuse it long before it has all arrived, and :func:`send` stops sending as soon as an
answer comes back or the server closes the connection.

The image files (``files``) stay inside every byte and pixel limit of the default
settings and still cost a naive decoder seconds: a header walk over millions of markers,
chunks, strips or sub-blocks. Each goes to /classify as a form part and as the raw body,
and to the v2 infer endpoint as a BYTES element in JSON (base64) and in binary.

Used by ``tests/app/test_input_gate.py`` (statuses and generous cost bounds) and
``benchmarks/hostile_server_bench.py`` (the measured costs).
"""

from __future__ import annotations

import base64
import functools
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from urllib.parse import urlparse

from benchmarks.hostile_inputs import HostileFile, small_jpeg, structure_floods

# MAX_UPLOAD_BYTES by default: every hostile file fits in it.
DEFAULT_UPLOAD_BYTES = 10 * 1024 * 1024
TENTH = "_1MiB"  # the name suffix of a flood built in 1 MiB
MAX_FILES = 64  # MAX_FILES_PER_REQUEST by default: images in one /classify or v2 request
CLASSIFY = "/classify"
SIMILAR = "/similar"
INFER = "/v2/models/signs_classifier/infer"
LABELS = "/admin/models/signs_classifier/labels/stable"
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_U64 = 2**64 - 1
DIGITS_5000 = "9" * 5000
BOUNDARY = "hostile-boundary-7f3a"

# What a refusal of bad input may be; what a hostile file inside the limits may also get
# (200 when it is cheap to decode after all).
REFUSED = frozenset({400, 413, 415, 422})
FILE_ANSWERS = REFUSED | {200}
V2_REFUSED = frozenset({400, 413})
NUMBER_REFUSED = frozenset({400, 422})


@dataclass(frozen=True)
class Segment:
    """``data`` written ``repeats`` times in a row."""

    data: bytes
    repeats: int = 1

    @property
    def size(self) -> int:
        return len(self.data) * self.repeats


@dataclass(frozen=True)
class Body:
    """A request body as a sequence of repeated segments; sent with a Content-Length, or
    with ``Transfer-Encoding: chunked`` when ``chunked``."""

    segments: tuple[Segment, ...] = ()
    chunked: bool = False

    @classmethod
    def of(cls, *parts: bytes | Segment | Body) -> Body:
        segments: list[Segment] = []
        for part in parts:
            if isinstance(part, Body):
                segments += part.segments
            elif isinstance(part, Segment):
                segments.append(part)
            elif part:
                segments.append(Segment(part))
        return cls(tuple(segments))

    @property
    def size(self) -> int:
        return sum(segment.size for segment in self.segments)

    def chunks(self, chunk_bytes: int = 256 * 1024) -> Iterator[bytes]:
        """The body in pieces of about ``chunk_bytes`` (a repeated segment is written in
        blocks of whole repeats, so nothing large is ever held)."""
        for segment in self.segments:
            per_block = max(1, chunk_bytes // max(1, len(segment.data)))
            block = segment.data * min(per_block, segment.repeats)
            full, rest = divmod(segment.repeats, per_block)
            for _ in range(full):
                yield block
            if rest:
                yield segment.data * rest

    def materialize(self) -> bytes:
        return b"".join(self.chunks(1 << 22))

    def as_chunked(self) -> Body:
        return replace(self, chunked=True)


@dataclass(frozen=True)
class HostileRequest:
    """One attack: ``build()`` gives its headers and body (made when sent, so that a corpus
    of hundreds of megabytes costs nothing until then). ``copies`` are sent at once (the
    measurement covers them together); ``forbidden_location`` must not appear in a
    redirect's ``Location``."""

    name: str
    kind: str  # multipart, raw, v2-json, v2-binary, header, path, query, admin-json, host
    method: str
    path: str
    build: Callable[[], tuple[dict[str, str], Body]]
    expected: frozenset[int]
    copies: int = 1
    forbidden_location: str | None = None


@dataclass
class Answer:
    """What came back: ``status`` None when the connection closed (or the client timed out)
    without a response."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    detail: str = ""  # the start of the body
    sent_bytes: int = 0
    seconds: float = 0.0
    error: str = ""
    message: str | None = None  # a refusal's JSON ``detail`` or ``error``, when it has one


def refusal_message(body: bytes) -> str | None:
    """The ``detail`` (task endpoints) or ``error`` (v2) of a JSON error body."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    message = parsed.get("detail", parsed.get("error"))
    return None if message is None else str(message)


# ---------------------------------------------------------------------------------------
# Hostile files: the structure floods of benchmarks/hostile_inputs.py, at the upload limit
# and at a tenth of it.


@functools.cache
def files() -> dict[str, HostileFile]:
    """Each structure flood as many repeats as fit in the default upload limit, and again
    in 1 MiB (which also fits a v2 JSON body once base64-encoded); built once, when the
    first of them is sent."""
    full = {flood.name: flood for flood in structure_floods(DEFAULT_UPLOAD_BYTES)}
    tenth = {f"{flood.name}{TENTH}": flood for flood in structure_floods(1024 * 1024)}
    return full | tenth


@functools.cache
def file_names() -> list[str]:
    """The names ``files()`` will have, from floods small enough to build at once (a corpus
    is listed, by pytest's collection for one, long before it is sent)."""
    names = [flood.name for flood in structure_floods(64 * 1024)]
    return names + [name + TENTH for name in names]


def media_type(file_name: str) -> str:
    return "image/" + file_name.split("_")[0]


# ---------------------------------------------------------------------------------------
# How a file reaches the server: a form part, the raw body, a v2 BYTES element.


def multipart(file: Body, filename: str, media_type: str, parts: int = 1) -> tuple[str, Body]:
    """(Content-Type, body) of a form with ``file`` as each of its ``parts`` ``file`` parts."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        f"\r\nContent-Type: {media_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    form = Body.of(*[Body.of(head, file, b"\r\n") for _ in range(parts)])
    form = Body.of(form, tail[2:])
    return f"multipart/form-data; boundary={BOUNDARY}", form


def v2_json_bytes(file: Body) -> Body:
    """A v2 JSON body with ``file`` base64-encoded as the one ``image`` element."""
    encoded = base64.b64encode(file.materialize())
    head = b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[1,1],"data":["'
    return Body.of(head, encoded, b'"]}]}')


def v2_binary_header(inputs: list[dict[str, object]]) -> bytes:
    return json.dumps({"inputs": inputs}, separators=(",", ":")).encode()


def v2_binary_bytes(file: Body, elements: int = 1) -> tuple[dict[str, str], Body]:
    """Headers and body of a v2 binary request with ``file`` as each of its ``elements``
    BYTES elements."""
    size = (4 + file.size) * elements
    header = v2_binary_header(
        [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [elements, 1],
                "parameters": {"binary_data_size": size},
            }
        ]
    )
    element = Body.of(struct.pack("<I", file.size), file)
    body = Body.of(header, *[element] * elements)
    return {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}, body


def _request(
    name: str,
    kind: str,
    path: str,
    body: Body | Callable[[], tuple[dict[str, str], Body]],
    expected: frozenset[int],
    headers: dict[str, str] | None = None,
    method: str = "POST",
    copies: int = 1,
) -> HostileRequest:
    """A request whose ``body`` is given (sent with ``headers``), or built later by it."""
    if isinstance(body, Body):
        fixed = (dict(headers or {}), body)
        return HostileRequest(name, kind, method, path, lambda: fixed, expected, copies)
    return HostileRequest(name, kind, method, path, body, expected, copies)


def _file(name: str) -> Body:
    return Body.of(files()[name].data)


def _as_form(name: str, parts: int = 1) -> tuple[dict[str, str], Body]:
    content_type, form = multipart(_file(name), name, media_type(name), parts)
    return {"Content-Type": content_type}, form


def _as_raw(name: str) -> tuple[dict[str, str], Body]:
    return {"Content-Type": media_type(name)}, _file(name)


def _as_v2_json(name: str) -> tuple[dict[str, str], Body]:
    return {"Content-Type": "application/json"}, v2_json_bytes(_file(name))


def _as_v2_binary(name: str, elements: int = 1) -> tuple[dict[str, str], Body]:
    return v2_binary_bytes(_file(name), elements)


def file_requests() -> list[HostileRequest]:
    """Every hostile file through every input kind: a /classify form part and raw body, a
    v2 BYTES element in binary and in JSON (base64; the full-size files are then over the
    JSON byte cap, the 1 MiB ones are not)."""
    kinds = (
        ("multipart", CLASSIFY, _as_form),
        ("raw", CLASSIFY, _as_raw),
        ("v2-binary", INFER, _as_v2_binary),
        ("v2-json", INFER, _as_v2_json),
    )
    requests = [
        _request(f"{name} {kind}", kind, path, functools.partial(build, name), FILE_ANSWERS)
        for name in file_names()
        for kind, path, build in kinds
    ]
    for name in ("jpeg_comment_flood_1MiB", "tiff_strip_flood_1MiB", "png_idat_flood_1MiB"):
        requests += [
            _request(
                f"64 x {name} multipart",
                "multipart",
                CLASSIFY,
                functools.partial(_as_form, name, MAX_FILES),
                FILE_ANSWERS,
            ),
            _request(
                f"64 x {name} v2-binary",
                "v2-binary",
                INFER,
                functools.partial(_as_v2_binary, name, MAX_FILES),
                FILE_ANSWERS,
            ),
        ]
    return requests


# ---------------------------------------------------------------------------------------
# Bodies far over any image's worth, streamed.


def ff_bytes(count: int) -> Segment:
    block = 64 * 1024
    return Segment(b"\xff" * block, count // block)


def stream_requests() -> list[HostileRequest]:
    """100 MB of 0xFF as one image in each input kind; 600 MB of declared FP32 pixels."""
    hundred_mb = Body.of(ff_bytes(100_000_000))
    declared = hundred_mb.size
    requests = []
    for chunked in (False, True):
        how = "chunked" if chunked else "length"
        framed = Body.as_chunked if chunked else Body.of
        content_type, form = multipart(hundred_mb, "ff.jpg", "image/jpeg")
        requests += [
            _request(
                f"100MB-ff multipart {how}",
                "multipart",
                CLASSIFY,
                framed(form),
                frozenset({413}),
                {"Content-Type": content_type},
            ),
            _request(
                f"100MB-ff raw {how}",
                "raw",
                CLASSIFY,
                framed(hundred_mb),
                frozenset({413}),
                {"Content-Type": "image/jpeg"},
            ),
        ]
        size = 4 + declared
        header = v2_binary_header(
            [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1, 1],
                    "parameters": {"binary_data_size": size},
                }
            ]
        )
        binary = Body.of(header, struct.pack("<I", declared), hundred_mb)
        requests.append(
            _request(
                f"100MB-ff v2-binary BYTES {how}",
                "v2-binary",
                INFER,
                framed(binary),
                V2_REFUSED,
                {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"},
            )
        )
        # base64 of 0xFF bytes is "////"
        as_json = Body.of(
            b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[1,1],"data":["',
            Segment(b"////" * 16384, declared * 4 // 3 // 65536),
            b'"]}]}',
        )
        requests.append(
            _request(
                f"133MB-base64 v2-json BYTES {how}",
                "v2-json",
                INFER,
                framed(as_json),
                V2_REFUSED,
                {"Content-Type": "application/json"},
            )
        )
        images = 600_000_000 // (64 * 64 * 3 * 4)
        pixels = images * 64 * 64 * 3 * 4
        header = v2_binary_header(
            [
                {
                    "name": "images",
                    "datatype": "FP32",
                    "shape": [images, 64, 64, 3],
                    "parameters": {"binary_data_size": pixels},
                }
            ]
        )
        zeros = Segment(bytes(64 * 64 * 3 * 4), images)
        fp32 = Body.of(header, zeros)
        fp32_headers = {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
        requests.append(
            _request(
                f"600MB-fp32 v2-binary {how}",
                "v2-binary",
                INFER,
                framed(fp32),
                V2_REFUSED,
                fp32_headers,
            )
        )
        numbers = Body.of(
            f'{{"inputs":[{{"name":"images","datatype":"FP32","shape":[{images},64,64,3],"data":['.encode(),
            Segment(b"0.0," * 16384, 600_000_000 // 65536),
            b"0.0]}]}",
        )
        requests.append(
            _request(
                f"600MB-fp32 v2-json {how}",
                "v2-json",
                INFER,
                framed(numbers),
                V2_REFUSED,
                {"Content-Type": "application/json"},
            )
        )
        requests.append(
            _request(
                f"600MB-fp32 v2-binary {how} x4",
                "v2-binary",
                INFER,
                framed(fp32),
                V2_REFUSED,
                fp32_headers,
                copies=4,
            )
        )
    return requests


# ---------------------------------------------------------------------------------------
# v2 tensor structure: shapes no model has.


def _v2_json(inputs: list[dict[str, object]]) -> Body:
    return Body.of(json.dumps({"inputs": inputs}, separators=(",", ":")).encode())


def shape_requests() -> list[HostileRequest]:
    """Shapes that make a naive parser multiply or allocate: tens of thousands of 2^64-1
    dimensions, negative, fractional, boolean and huge dimensions, rank 1000; in JSON and
    in binary (where ``binary_data_size`` stays small)."""
    image = base64.b64encode(small_jpeg()).decode()
    shapes: list[tuple[str, frozenset[int], str]] = [
        ("80k dims of 2^64-1 (1.7 MB)", V2_REFUSED, json.dumps([MAX_U64] * 80_000)),
        ("8k dims of 2^64-1", V2_REFUSED, json.dumps([MAX_U64] * 8_000)),
        ("negative dim", V2_REFUSED, "[-1,1]"),
        ("float dim", V2_REFUSED, "[1.5,1]"),
        ("bool dim", V2_REFUSED, "[true,true]"),
        ("2^64-1 dim", V2_REFUSED, f"[{MAX_U64},1]"),
        ("10^30 dim", V2_REFUSED, f"[{10**30},1]"),
        ("1e30 dim", V2_REFUSED, "[1e30,1]"),
        ("4000-digit dim", V2_REFUSED, f"[{'9' * 4000},1]"),
        ("rank 1000", V2_REFUSED, json.dumps([1] * 1000)),
    ]
    requests = []
    for name, expected, shape in shapes:
        body = (
            f'{{"inputs":[{{"name":"image","datatype":"BYTES","shape":{shape},"data":["{image}"]}}]}}'
        ).encode()
        requests.append(
            _request(
                f"shape {name} v2-json",
                "v2-json",
                INFER,
                Body.of(body),
                expected,
                {"Content-Type": "application/json"},
            )
        )
    pixels = bytes(64 * 64 * 3 * 4)
    for name, shape in (
        ("80k dims of 2^64-1", json.dumps([MAX_U64] * 80_000)),
        ("2^64-1 images", f"[{MAX_U64},64,64,3]"),
        ("2^62 x 2^62 images", f"[{2**62},{2**62},64,3]"),
        ("rank 1000", json.dumps([1] * 1000)),
    ):
        header = (
            f'{{"inputs":[{{"name":"images","datatype":"FP32","shape":{shape},'
            f'"parameters":{{"binary_data_size":{len(pixels)}}}}}]}}'
        ).encode()
        requests.append(
            _request(
                f"shape {name} v2-binary",
                "v2-binary",
                INFER,
                Body.of(header, pixels),
                V2_REFUSED,
                {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"},
            )
        )
    return requests + _binary_size_requests()


def _binary_size_requests() -> list[HostileRequest]:
    """Byte counts in a v2 binary body that do not match: a binary_data_size of 2^64-1, a
    BYTES length prefix of 2^32-1, 600 MB declared as UINT8 (a datatype no model takes)."""
    jpeg = small_jpeg()
    element = Body.of(struct.pack("<I", len(jpeg)), jpeg)
    images = 600_000_000 // (64 * 64 * 3)
    cases = (
        ("binary_data_size 2^64-1", "image", "BYTES", "[1,1]", MAX_U64, element),
        (
            "BYTES length prefix 2^32-1",
            "image",
            "BYTES",
            "[1,1]",
            element.size,
            Body.of(struct.pack("<I", 2**32 - 1), jpeg),
        ),
        (
            "600MB-uint8 length",
            "images",
            "UINT8",
            f"[{images},64,64,3]",
            images * 64 * 64 * 3,
            Body.of(Segment(bytes(64 * 64 * 3), images)),
        ),
    )
    requests = []
    for name, tensor, datatype, shape, size, tensor_bytes in cases:
        header = (
            f'{{"inputs":[{{"name":"{tensor}","datatype":"{datatype}","shape":{shape},'
            f'"parameters":{{"binary_data_size":{size}}}}}]}}'
        ).encode()
        requests.append(
            _request(
                f"{name} v2-binary",
                "v2-binary",
                INFER,
                Body.of(header, tensor_bytes),
                V2_REFUSED,
                {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"},
            )
        )
    return requests


def form_count_requests() -> list[HostileRequest]:
    """Forms with more parts than any request takes: 1000 tiny file parts, 20,000 text
    fields."""
    content_type, parts = multipart(Body.of(small_jpeg()), "hand.jpg", "image/jpeg", 1000)
    field = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'.encode()
    fields = Body.of(Segment(field, 20_000), f"--{BOUNDARY}--\r\n".encode())
    headers = {"Content-Type": content_type}
    return [
        _request("1000 file parts multipart", "multipart", CLASSIFY, parts, REFUSED, headers),
        _request("20k text fields multipart", "multipart", CLASSIFY, fields, REFUSED, headers),
    ]


# ---------------------------------------------------------------------------------------
# Numbers in headers, paths and queries; JSON depth; the admin body; redirects.


def friendly_jpeg() -> bytes:
    return small_jpeg()


def number_requests() -> list[HostileRequest]:
    """Every number a request carries, malformed: non-ASCII digits, 5000 digits, nan and
    infinities. Each request is otherwise valid, so a 200 means the number was accepted."""
    jpeg = friendly_jpeg()
    raw = Body.of(jpeg)
    image_headers = {"Content-Type": "image/jpeg"}
    binary_headers, binary = v2_binary_bytes(raw)
    header_only = binary.segments[0].data
    requests = []
    for name, value in (
        ("arabic-indic digit", "\u0663"),
        ("superscript two", "\u00b2"),
        ("5000 digits", DIGITS_5000),
        ("negative", "-1"),
        ("exponent", "1e3"),
    ):
        headers = {**binary_headers, HEADER_LENGTH: value}
        requests.append(
            _request(f"{HEADER_LENGTH} {name}", "header", INFER, binary, NUMBER_REFUSED, headers)
        )
    requests.append(
        _request(
            f"{HEADER_LENGTH} past the body",
            "header",
            INFER,
            binary,
            NUMBER_REFUSED,
            {**binary_headers, HEADER_LENGTH: str(len(header_only) + 10**9)},
        )
    )
    for name, value in (
        ("nan", "nan"),
        ("1e999", "1e999"),
        ("inf", "inf"),
        ("5000 digits", DIGITS_5000),
        ("arabic-indic digit", "\u0663"),
    ):
        headers = {**image_headers, "X-Request-Timeout": value}
        requests.append(
            _request(
                f"X-Request-Timeout {name} classify",
                "header",
                CLASSIFY,
                raw,
                NUMBER_REFUSED,
                headers,
            )
        )
    requests.append(
        _request(
            "X-Request-Timeout 5000 digits v2",
            "header",
            INFER,
            binary,
            NUMBER_REFUSED,
            {**binary_headers, "X-Request-Timeout": DIGITS_5000},
        )
    )
    versions = (
        ("5000 digits", DIGITS_5000),
        ("arabic-indic digit", "%D9%A3"),
        ("superscript two", "%C2%B2"),
    )
    path_answers = NUMBER_REFUSED | {404}
    for name, value in versions:
        requests += [
            _request(
                f"v2 infer version path {name}",
                "path",
                f"/v2/models/signs_classifier/versions/{value}/infer",
                binary,
                path_answers,
                binary_headers,
            ),
            _request(
                f"v2 metadata version path {name}",
                "path",
                f"/v2/models/signs_classifier/versions/{value}",
                Body(),
                path_answers,
                method="GET",
            ),
            _request(
                f"classify ?version= {name}",
                "query",
                f"{CLASSIFY}?version={value}",
                raw,
                NUMBER_REFUSED,
                image_headers,
            ),
            _request(
                f"similar ?k= {name}",
                "query",
                f"{SIMILAR}?k={value}",
                raw,
                NUMBER_REFUSED,
                image_headers,
            ),
        ]
    requests += [
        _request(
            "gallery id 5000 digits",
            "path",
            f"/gallery/{DIGITS_5000}.png",
            Body(),
            NUMBER_REFUSED | {404},
            method="GET",
        ),
        _request(
            "gallery ?version= 5000 digits",
            "query",
            f"/gallery/1.png?version={DIGITS_5000}",
            Body(),
            NUMBER_REFUSED | {404},
            method="GET",
        ),
    ]
    return requests


def structure_requests() -> list[HostileRequest]:
    """Deep JSON on v2 and on the open admin endpoint, and a Host header a redirect could
    echo."""
    json_headers = {"Content-Type": "application/json"}
    deep_list = b'{"inputs":' + b"[" * 5000 + b"]" * 5000 + b"}"
    deep_object = b'{"inputs":[{"name":"image","parameters":' + b'{"a":' * 5000 + b"1"
    deep_object += b"}" * 5000 + b"}]}"
    unclosed = b"[" * 60 * 1024
    requests = [
        _request(
            "JSON nested 5000 deep (lists) v2",
            "v2-json",
            INFER,
            Body.of(deep_list),
            V2_REFUSED | {422},
            json_headers,
        ),
        _request(
            "JSON nested 5000 deep (objects) v2",
            "v2-json",
            INFER,
            Body.of(deep_object),
            V2_REFUSED | {422},
            json_headers,
        ),
        _request(
            "JSON header nested 5000 deep v2-binary",
            "v2-binary",
            INFER,
            Body.of(deep_list),
            V2_REFUSED | {422},
            {HEADER_LENGTH: str(len(deep_list)), "Content-Type": "application/octet-stream"},
        ),
        _request(
            "admin labels 60 KiB of [",
            "admin-json",
            LABELS,
            Body.of(unclosed),
            NUMBER_REFUSED,
            json_headers,
            method="PUT",
        ),
        _request(
            "admin labels nested 5000 deep",
            "admin-json",
            LABELS,
            Body.of(b'{"version":' + b"[" * 5000 + b"]" * 5000 + b"}"),
            NUMBER_REFUSED,
            json_headers,
            method="PUT",
        ),
        _request(
            "admin labels version 5000 digits",
            "admin-json",
            LABELS,
            Body.of(f'{{"version":{DIGITS_5000}}}'.encode()),
            NUMBER_REFUSED | {404},
            json_headers,
            method="PUT",
        ),
    ]
    redirect_answers = frozenset({200, 404, 307, 308})
    for path in ("/models/", "/healthz/", "/v2/models/signs_classifier/"):
        requests.append(
            replace(
                _request(
                    f"GET {path} Host: evil.example",
                    "host",
                    path,
                    Body(),
                    redirect_answers,
                    {"Host": "evil.example"},
                    method="GET",
                ),
                forbidden_location="evil.example",
            )
        )
    return requests


def corpus() -> list[HostileRequest]:
    """Every attack, cheapest first (numbers and structure), then files, then streams."""
    return [
        *number_requests(),
        *structure_requests(),
        *shape_requests(),
        *form_count_requests(),
        *file_requests(),
        *stream_requests(),
    ]


QUICK = (
    "X-Request-Timeout nan classify",
    "similar ?k= 5000 digits",
    "JSON nested 5000 deep (lists) v2",
    "GET /models/ Host: evil.example",
    "shape 8k dims of 2^64-1 v2-json",
    "png_ancillary_flood_1MiB raw",
    "jpeg_comment_flood_1MiB multipart",
    "100MB-ff raw length",
)


def quick_corpus() -> list[HostileRequest]:
    """A few cheap requests of different kinds: what a smoke run needs."""
    return [request for request in corpus() if request.name in QUICK]


# ---------------------------------------------------------------------------------------
# Sending: raw HTTP/1.1 that stops writing as soon as the server answers or closes.


def request_head(request: HostileRequest, headers: dict[str, str], body: Body, host: str) -> bytes:
    lines = [f"{request.method} {request.path} HTTP/1.1"]
    if "Host" not in headers:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body.chunked:
        lines.append("Transfer-Encoding: chunked")
    elif body.size or request.method in {"POST", "PUT"}:
        lines.append(f"Content-Length: {body.size}")
    lines.append("Connection: close")
    # Header values go out as UTF-8: a non-ASCII digit arrives as the bytes a client sent.
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _framed(body: Body) -> Iterator[bytes]:
    for chunk in body.chunks():
        yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if body.chunked else chunk
    if body.chunked:
        yield b"0\r\n\r\n"


def send(
    base_url: str,
    request: HostileRequest,
    timeout_s: float = 60.0,
    built: tuple[dict[str, str], Body] | None = None,
) -> Answer:
    """One request on a fresh connection. The body is written only while the server has
    neither answered nor closed; then the response is read (what arrived before a reset
    included). A client timeout or a close without a response gives ``status`` None.
    ``built``: the request's headers and body when already built."""
    headers, body = built or request.build()
    url = urlparse(base_url)
    start = time.monotonic()
    deadline = start + timeout_s
    sent = 0
    error = ""
    try:
        sock = socket.create_connection((url.hostname, url.port), timeout=timeout_s)
    except OSError as failure:
        return Answer(None, error=f"connect: {failure}")
    with sock:
        try:
            sock.sendall(request_head(request, headers, body, url.netloc))
            answered = False
            for piece in _framed(body):
                view = memoryview(piece)
                while view and not answered:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("timed out sending the body")
                    readable, writable, _ = select.select([sock], [sock], [], left)
                    if readable:
                        answered = True  # an answer (or a close) came before the body ended
                    elif writable:
                        written = sock.send(view)
                        sent += written
                        view = view[written:]
                if answered:
                    break
        except (BrokenPipeError, ConnectionResetError) as failure:
            error = f"write: {failure.__class__.__name__}"
        except TimeoutError as failure:
            return Answer(
                None, sent_bytes=sent, seconds=time.monotonic() - start, error=str(failure)
            )
        answer = _read_answer(sock, deadline)
    answer.sent_bytes = sent
    answer.seconds = time.monotonic() - start
    answer.error = answer.error or error
    return answer


def _read_answer(sock: socket.socket, deadline: float) -> Answer:
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                return Answer(None, error="closed without a response")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        while len(body) < length:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (ConnectionResetError, TimeoutError, OSError) as failure:
        if b"\r\n\r\n" not in data:
            return Answer(None, error=f"read: {failure.__class__.__name__}")
        head, _, body = data.partition(b"\r\n\r\n")
        status_line = head.decode("latin-1").split("\r\n")[0]
        headers = {}
    answer = Answer(int(status_line.split()[1]), headers, body[:600].decode(errors="replace"))
    answer.message = refusal_message(body)
    return answer


def send_all(
    base_url: str,
    request: HostileRequest,
    timeout_s: float = 60.0,
    built: tuple[dict[str, str], Body] | None = None,
) -> list[Answer]:
    """``request.copies`` sends at once, each on its own connection and thread."""
    built = built or request.build()
    if request.copies == 1:
        return [send(base_url, request, timeout_s, built)]
    answers: list[Answer] = [Answer(None)] * request.copies

    def one(position: int) -> None:
        answers[position] = send(base_url, request, timeout_s, built)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(request.copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def problems(request: HostileRequest, answers: list[Answer]) -> list[str]:
    """What is wrong with the answers: a status outside the expected set, a 5xx, no answer,
    a 4xx without a JSON ``detail`` or ``error`` saying why, or a redirect to the
    forbidden host."""
    found = []
    for answer in answers:
        if answer.status is None:
            found.append(f"no response ({answer.error})")
        elif answer.status not in request.expected:
            found.append(
                f"status {answer.status} not in {sorted(request.expected)}: {answer.detail[:200]}"
            )
        elif answer.status >= 400 and not answer.message:
            found.append(f"status {answer.status} without a JSON detail: {answer.detail[:200]}")
        location = answer.headers.get("location", "")
        if request.forbidden_location and request.forbidden_location in location:
            found.append(f"redirects to {location}")
    return found
