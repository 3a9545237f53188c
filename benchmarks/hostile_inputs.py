"""Small uploads that are expensive to decode: the worst inputs an image service may accept.

Each builder returns the bytes of one file that is cheap to send (kilobytes) and as costly
to decode as the format allows at a given size: flat pixels compress to almost nothing, and
a progressive JPEG may repeat empty scans. The tests send them to a real server; the hostile
benchmark times their decoding.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 6: 4}  # colour type -> samples per pixel (grey, RGB, RGBA)
_SOS, _DHT, _EOI = b"\xff\xda", b"\xff\xc4", b"\xff\xd9"


def progressive_jpeg(side: int, scans: int) -> bytes:
    """A grey progressive JPEG of ``side`` x ``side`` with ``scans`` scans in all.

    Pillow writes 6 scans for a grey image; the last one (a refinement of every AC
    coefficient, only end-of-band codes for a flat image) is repeated, with its Huffman
    table, until there are ``scans``. libjpeg warns about the repeated refinement and decodes
    each one over the whole image: the cost grows with ``side**2 * scans``, the size by 39
    bytes a scan.
    """
    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, format="JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    last_table = data.rindex(_DHT)
    if data.count(_SOS) != 6 or not data.endswith(_EOI) or data.rindex(_SOS) < last_table:
        raise RuntimeError("Pillow's progressive JPEG no longer has the expected layout")
    last_scan = data[last_table : -len(_EOI)]
    return data[: -len(_EOI)] + last_scan * max(scans - 6, 0) + _EOI


def flat_png(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG of zero pixels written row by row (never held as an array): a few kilobytes
    however many pixels. ``colour_type`` 0 grey, 2 RGB, 6 RGBA; ``bit_depth`` 8 or 16."""
    row = b"\x00" * (1 + width * _PNG_CHANNELS[colour_type] * bit_depth // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + (_png_chunk(b"IEND", b""))
    )


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def rle_bmp(width: int, height: int) -> bytes:
    """An 8-bit run-length-encoded BMP of one grey value: two bytes per 255 pixels."""
    runs = bytearray()
    for _ in range(height):
        left = width
        while left:
            run = min(left, 255)
            runs += bytes((run, 0))
            left -= run
        runs += b"\x00\x00"  # end of line
    runs += b"\x00\x01"  # end of bitmap
    palette = b"".join(bytes((value, value, value, 0)) for value in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(runs), 2835, 2835, 256, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(runs), 0, 0, offset)
    return header + info + palette + bytes(runs)


def flat_image(
    image_format: str, width: int, height: int, mode: str = "RGB", **save: object
) -> bytes:
    """One flat colour in ``image_format`` (Pillow's encoder): GIF, WebP, TIFF, JPEG."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 0).save(buffer, format=image_format, **save)
    return buffer.getvalue()
