"""The robustness corpus: hostile or odd uploads, each with the answer the API owes it.

Real images in unusual shapes, modes and formats must be served (200); everything else must
be refused with a 4xx JSON ``detail``. The bytes are built here rather than stored, so every
case says in code what it is.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from PIL import Image

from tests.app.samples import gradient_image, image_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MULTIPART_PART_HEAD = (
    b'--corpus\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
)


@dataclass(frozen=True)
class Case:
    """One request (keyword arguments for ``httpx.AsyncClient.post``) and its expected answer."""

    name: str
    request: dict[str, Any] = field(repr=False)
    status: int
    fragment: str = ""  # must appear in the JSON ``detail``


def upload(data: bytes, filename: str = "upload.png") -> dict[str, Any]:
    return {"files": {"file": (filename, data)}}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


@cache
def png_bomb(side: int = 20_000) -> bytes:
    """A genuine 1-bit PNG, ``side`` x ``side`` black pixels: ~50 KB decoding to 400 M pixels."""
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte, then 8 pixels per byte
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def png_with_corrupt_pixels() -> bytes:
    """A complete PNG whose compressed pixel data is overwritten (bit rot, tampering).

    (A wrong IDAT checksum alone would not do: Pillow does not verify it, and the pixels are
    intact, so such a file is rightly served.)
    """
    data = bytearray(image_bytes("PNG", size=(64, 64)))
    pixels_start = data.index(b"IDAT") + 20  # past the chunk type and the zlib header
    data[pixels_start : pixels_start + 40] = bytes(40)
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((200, 0, 0), (0, 0, 200))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=80)
    return buffer.getvalue()


def palette_png_with_transparency() -> bytes:
    buffer = io.BytesIO()
    gradient_image((48, 48)).convert("P").save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


def real_images() -> list[tuple[str, bytes, str]]:
    """``(case name, bytes, filename)`` of images every endpoint must serve with a 200."""
    return [
        ("1x1 PNG", image_bytes("PNG", size=(1, 1)), "dot.png"),
        ("2000x1 strip", image_bytes("PNG", size=(2000, 1)), "strip.png"),
        ("animated GIF", animated_gif(), "animated.gif"),
        ("16-bit PNG", image_bytes("PNG", mode="I;16"), "deep.png"),
        ("CMYK JPEG", image_bytes("JPEG", mode="CMYK"), "print.jpg"),
        ("RGBA PNG", image_bytes("PNG", mode="RGBA"), "alpha.png"),
        ("palette PNG", image_bytes("PNG", mode="P"), "palette.png"),
        ("palette PNG with transparency", palette_png_with_transparency(), "clear.png"),
        ("greyscale JPEG", image_bytes("JPEG", mode="L"), "grey.jpg"),
        ("1000-character file name", image_bytes(), "n" * 996 + ".png"),
        ("non-ASCII file name", image_bytes(), "клетка-細胞-🦠 ✓.png"),
    ]


def raw_as(content_type: str = "application/octet-stream") -> dict[str, Any]:
    """The keyword arguments of a raw-body request with this Content-Type."""
    return {"headers": {"Content-Type": content_type}}


def rejected_uploads(max_upload_bytes: int, max_image_pixels: int) -> list[Case]:
    """Requests that every upload endpoint must refuse with the given 4xx status."""
    jpeg = image_bytes("JPEG", size=(200, 150))
    png = image_bytes("PNG", size=(200, 150))
    if max_image_pixels < 200 * 150:
        raise ValueError("make max_image_pixels at least 200 x 150 for this corpus")
    one_row_too_many = image_bytes("PNG", size=(max_image_pixels // 100, 101))
    corrupt_png = png_with_corrupt_pixels()
    header_only_png = png[: len(PNG_SIGNATURE) + 25]  # signature + IHDR chunk, no pixel data
    oversized_bmp = image_bytes("BMP", size=(400, 400))
    if len(oversized_bmp) <= max_upload_bytes:
        raise ValueError(f"make max_upload_bytes smaller than {len(oversized_bmp)} for this corpus")
    multipart = {"headers": {"Content-Type": "multipart/form-data; boundary=corpus"}}
    return [
        Case("no body at all", {}, 422, "file"),
        Case("file under another field name", {"files": {"image": ("x.png", png)}}, 422, "file"),
        Case("zero-byte file", upload(b"", "empty.png"), 400, "empty.png: the file is empty"),
        Case("text named .png", upload(b"just some notes\n", "notes.png"), 415, "notes.png"),
        Case("SVG named .png", upload(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), 415, "format"),
        Case("truncated JPEG", upload(jpeg[: len(jpeg) // 2], "cut.jpg"), 400, "cut.jpg"),
        Case("PNG cut in half", upload(png[: len(png) // 2], "half.png"), 400, "half.png"),
        Case("PNG cut after its header", upload(header_only_png, "cut.png"), 400, "cut.png"),
        Case("PNG with corrupt pixels", upload(corrupt_png, "rot.png"), 400, "rot.png"),
        Case("JPEG marker then noise", upload(jpeg[:4] + bytes(range(256)) * 4), 400, "JPEG"),
        Case("20000x20000 PNG bomb", upload(png_bomb(), "bomb.png"), 413, "pixel limit"),
        Case("one row over the pixel limit", upload(one_row_too_many), 413, "pixel limit"),
        Case("real image over the byte limit", upload(oversized_bmp, "big.bmp"), 413, "limit"),
        Case("form field instead of a file", {"data": {"file": "not a file"}}, 422, "UploadFile"),
        Case("JSON body", {"json": {"file": "aGVsbG8="}}, 415, "application/json"),
        Case(
            "raw image as text/plain", {"content": png, **raw_as("text/plain")}, 415, "text/plain"
        ),
        Case("raw empty body", {"content": b"", **raw_as("image/png")}, 400, "empty"),
        Case(
            "raw text as image/jpeg", {"content": b"notes\n", **raw_as("image/jpeg")}, 415, "body"
        ),
        Case("raw truncated JPEG", {"content": jpeg[:300], **raw_as("image/jpeg")}, 400, "body"),
        Case("raw PNG bomb", {"content": png_bomb(), **raw_as("image/png")}, 413, "pixel limit"),
        Case("raw image over the byte limit", {"content": oversized_bmp, **raw_as()}, 413, "limit"),
        Case(
            "multipart without boundary",
            {"content": b"x", "headers": {"Content-Type": "multipart/form-data"}},
            400,
            "boundary",
        ),
        Case(
            "multipart part with a malformed header line",
            {"content": b"--corpus\r\nnot a header\r\n\r\nabc\r\n--corpus--\r\n", **multipart},
            400,
            "multipart",
        ),
        Case(
            "multipart without its closing boundary",
            {"content": MULTIPART_PART_HEAD + png, **multipart},
            422,
            "file",
        ),
        Case("8 KB file-name header", upload(png, "x" * 9000 + ".png"), 400, "multipart"),
    ]
