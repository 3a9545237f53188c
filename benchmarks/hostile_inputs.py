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
from dataclasses import dataclass

from PIL import Image, TiffTags

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


# Structure floods: files within every byte and pixel limit whose *headers* hold so many
# segments, chunks, strips or sub-blocks that a decoder walking them in Python spends
# seconds and hundreds of megabytes before (or instead of) decoding a pixel. Each builder
# takes the count of repeated structures; ``structure_floods`` sizes them to fill an upload.

JPEG_COM, JPEG_APP3 = 0xFE, 0xE3  # a comment segment; an application segment nothing reads
_JPEG_SOI = b"\xff\xd8"


def small_jpeg(side: int = 64) -> bytes:
    """A baseline grey-gradient JPEG of ``side`` x ``side`` as Pillow writes it (SOI, APP0,
    DQT, SOF0, DHT, SOS, EOI): the real image the floods below carry."""
    image = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def jpeg_segment_flood(segments: int, marker: int = JPEG_COM, side: int = 64) -> bytes:
    """A ``side`` x ``side`` JPEG whose frame is preceded by ``segments`` empty segments of
    ``marker`` (4 bytes each: ``FF marker 00 02``), e.g. ``JPEG_COM`` or ``JPEG_APP3``.

    A real, decodable image: libjpeg skips the segments in C, but a marker walk in Python
    (Pillow's, or ours) pays one iteration per segment; 2.6 million fit in 10 MiB.
    """
    data = small_jpeg(side)
    return _JPEG_SOI + bytes((0xFF, marker, 0, 2)) * segments + data[len(_JPEG_SOI) :]


def jpeg_fill_flood(fill_bytes: int, side: int = 64) -> bytes:
    """A ``side`` x ``side`` JPEG with ``fill_bytes`` 0xFF fill bytes between its SOI and
    first segment: legal padding that Pillow steps one byte per Python iteration."""
    data = small_jpeg(side)
    return _JPEG_SOI + b"\xff" * fill_bytes + data[len(_JPEG_SOI) :]


PNG_PRIVATE_CHUNK = b"prVt"  # ancillary, private: decoders skip it


def png_chunk_flood(chunks: int, kind: bytes = b"IDAT", side: int = 64) -> bytes:
    """A ``side`` x ``side`` grey PNG holding ``chunks`` chunks of ``kind`` (12 bytes each
    when empty).

    ``kind=b"IDAT"``: the image data split into one-byte IDAT chunks, padded with empty
    ones, which a PNG decoder must read in order (Pillow does so in Python). Any other
    ``kind`` (e.g. ``PNG_PRIVATE_CHUNK``): that many empty chunks before the image data.
    """
    row = b"\x00" + bytes(column % 256 for column in range(side))  # filter type, a ramp
    compressed = zlib.compress(row * side, 9)
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    if kind == b"IDAT":
        pieces = [compressed[index : index + 1] for index in range(len(compressed))]
        pieces += [b""] * max(chunks - len(pieces), 0)
        before, data = b"", b"".join(_png_chunk(b"IDAT", piece) for piece in pieces)
    else:
        before = _png_chunk(kind, b"") * chunks
        data = _png_chunk(b"IDAT", compressed)
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + before + data + _png_chunk(b"IEND", b"")


def gif_comment_flood(sub_blocks: int, extensions: int = 1, side: int = 64) -> bytes:
    """A ``side`` x ``side`` GIF whose first image is preceded by ``extensions`` comment
    extensions holding ``sub_blocks`` one-byte sub-blocks between them (2 bytes each).

    Pillow reads every sub-block in Python and keeps each as a bytes object until it joins
    the comment: millions of them cost seconds and hundreds of megabytes.
    """
    data = flat_image("GIF", side, side, "L")
    image_start = data.index(b",", 13 + 3 * 2 ** ((data[10] & 7) + 1))
    per_extension, extra = divmod(sub_blocks, max(extensions, 1))
    comments = b"".join(
        b"!\xfe" + b"\x01c" * (per_extension + (index < extra)) + b"\x00"
        for index in range(extensions)
    )
    return data[:image_start] + comments + data[image_start:]


def tiff_strip_flood(strips: int, width: int = 1) -> bytes:
    """A grey TIFF ``width`` pixels wide and ``strips`` rows tall, stored as one strip per
    row (6 bytes a strip: a 4-byte offset and a 2-byte count, then its ``width`` pixels).

    At 1,000,000 strips of width 1 it is exactly 1 MP (within every pixel limit) in 7 MB;
    Pillow builds tuples of the million offsets and decodes strip by strip in Python.
    """
    offsets_at = 8 + 2 + 9 * 12 + 4
    counts_at = offsets_at + 4 * strips
    pixels_at = counts_at + 2 * strips
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, strips),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # PhotometricInterpretation: black is zero
        (273, 4, strips, offsets_at if strips > 1 else pixels_at),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, 1),  # RowsPerStrip
        # StripByteCounts: inline when two fit in the entry
        (279, 3, strips, counts_at if strips > 2 else width * (1 + 0x10000 * (strips - 1))),
    ]
    pixels = bytes(column % 256 for column in range(width)) * strips
    return (
        _tiff_ifd(entries)
        + struct.pack(f"<{strips}I", *range(pixels_at, pixels_at + width * strips, width))
        + struct.pack(f"<{strips}H", *([width] * strips))
        + pixels
    )


def tiff_entry_flood(entries: int, side: int = 64) -> bytes:
    """A ``side`` x ``side`` grey TIFF whose first IFD holds ``entries`` entries in all:
    the eight it needs and private one-byte tags (12 bytes each) that Pillow reads one by
    one in Python. A classic TIFF's IFD holds at most 65,535 entries; about 65,000 tags are free."""
    required = 8
    known = set(TiffTags.TAGS_V2) | {key for key in TiffTags.TAGS if isinstance(key, int)}
    known.add(0xBC01)  # a JPEG XR pixel format: Pillow refuses the file
    filler = (tag for tag in range(1, 65536) if tag not in known)
    fillers = [(next(filler), 1, 1, 0) for _ in range(max(entries - required, 0))]
    pixels_at = 8 + 2 + (required + len(fillers)) * 12 + 4
    needed = [
        (256, 4, 1, side),
        (257, 4, 1, side),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, pixels_at),
        (278, 4, 1, side),
        (279, 4, 1, side * side),
    ]
    return _tiff_ifd(needed + fillers) + bytes(side * side)


def _tiff_ifd(entries: list[tuple[int, int, int, int]]) -> bytes:
    """A little-endian TIFF header and one IFD of ``(tag, type, count, value)`` entries
    (the value inline, or the offset of the values), sorted by tag, with no next IFD."""
    body = b"".join(
        struct.pack("<HHI", tag, kind, count)
        + (struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value))
        for tag, kind, count, value in sorted(entries)
    )
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + body + bytes(4)


def rle_bmp_line_ends(width: int, height: int) -> bytes:
    """An 8-bit run-length-encoded BMP of ``width`` x ``height`` whose every row is one
    pixel and an end-of-line record (4 bytes a row): Pillow's RLE decoder, written in
    Python, pads the rest of each row one pixel per iteration."""
    runs = b"\x01\x80\x00\x00" * height + b"\x00\x01"
    palette = b"".join(bytes((value, value, value, 0)) for value in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(runs), 2835, 2835, 256, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(runs), 0, 0, offset)
    return header + info + palette + runs


def webp_chunk_flood(chunks: int, side: int = 64) -> bytes:
    """A lossless ``side`` x ``side`` WebP in the extended (VP8X) layout followed by
    ``chunks`` empty unknown chunks (8 bytes each), which libwebp's demuxer lists one by one."""
    plain = flat_image("WEBP", side, side, lossless=True)
    bitstream = plain[12:]  # the VP8L chunk
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (side - 1).to_bytes(3, "little") * 2
    body = b"WEBP" + vp8x + bitstream + b"ZZZZ\x00\x00\x00\x00" * chunks
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png_exif_flood(entries: int, side: int = 64) -> bytes:
    """A ``side`` x ``side`` grey PNG whose eXIf chunk holds an IFD of ``entries`` one-byte
    entries (12 bytes each): Pillow parses every one in Python when asked for the image's
    orientation, and a PNG chunk, unlike a JPEG segment, may hold 65,535 of them."""
    exif = tiff_entry_flood(entries, side=1)
    png = png_chunk_flood(1, PNG_PRIVATE_CHUNK, side)
    image_data = png.index(b"IDAT") - 4
    return png[:image_data] + _png_chunk(b"eXIf", exif) + png[image_data:]


def png_text_flood(chunks: int, side: int = 64) -> bytes:
    """A ``side`` x ``side`` grey PNG with ``chunks`` zTXt chunks, each a 1 KB deflate
    stream of 1 MB of text: Pillow inflates each (up to its 1 MB chunk limit) and keeps
    the text, 64 of them before it refuses the file."""
    text = zlib.compress(b"a" * 1_000_000, 9)
    floods = b"".join(_png_chunk(b"zTXt", b"k%d\x00\x00" % n + text) for n in range(chunks))
    png = png_chunk_flood(1, PNG_PRIVATE_CHUNK, side)
    image_data = png.index(b"IDAT") - 4
    return png[:image_data] + floods + png[image_data:]


@dataclass(frozen=True)
class HostileFile:
    """One structure flood: its bytes and how the server must answer it (a 413 whose
    ``detail`` contains ``detail_contains``); ``before_decoder``: refused before Pillow
    or libjpeg parses it (else once Pillow has read its header, which the walk bounded)."""

    name: str
    data: bytes
    status: int
    detail_contains: str
    before_decoder: bool = True


def structure_floods(max_bytes: int = 10 * 1024 * 1024) -> list[HostileFile]:
    """Each structure flood, as many repeats as fit in ``max_bytes`` (the upload limit):
    what an attacker sends to make a decoder walk headers for seconds."""
    room = max_bytes - 4096  # the real image and headers around the repeats
    return [
        HostileFile("jpeg_comment_flood", jpeg_segment_flood(room // 4, JPEG_COM), 413, "segments"),
        HostileFile("jpeg_app_flood", jpeg_segment_flood(room // 4, JPEG_APP3), 413, "segments"),
        HostileFile("jpeg_fill_flood", jpeg_fill_flood(room), 413, "fill bytes"),
        HostileFile("png_idat_flood", png_chunk_flood(room // 12), 413, "chunks"),
        HostileFile(
            "png_ancillary_flood", png_chunk_flood(room // 12, PNG_PRIVATE_CHUNK), 413, "chunks"
        ),
        HostileFile("gif_comment_flood", gif_comment_flood(room // 2), 413, "sub-blocks"),
        HostileFile(
            "gif_extension_flood",
            gif_comment_flood(room // 5, extensions=room // 5),
            413,
            "extension blocks",
        ),
        HostileFile("tiff_strip_flood", tiff_strip_flood(min(room // 7, 1_000_000)), 413, "strips"),
        HostileFile("tiff_entry_flood", tiff_entry_flood(60_000), 413, "IFD entries"),
        HostileFile("bmp_rle_line_ends", rle_bmp_line_ends(2000, 2000), 413, "run-length"),
        HostileFile("webp_chunk_flood", webp_chunk_flood(room // 8), 413, "chunks"),
        HostileFile(
            "png_exif_flood",
            png_exif_flood(min(room // 12, 60_000)),
            413,
            "IFD entries",
            before_decoder=False,
        ),
        HostileFile("png_text_flood", png_text_flood(min(room // 1100, 70)), 413, "compressed"),
    ]
