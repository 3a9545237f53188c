"""Bounded structural walks of encoded images, run before any decoder sees the bytes.

Pillow reads the structure of several formats in Python, one interpreter step per JPEG
segment or fill byte, PNG chunk, GIF sub-block, TIFF strip or IFD entry, BMP run-length
record; a file within every byte and pixel limit can hold millions of them and cost seconds
of CPU and hundreds of megabytes before a pixel is decoded. ``check_structure`` walks the
same structure first, with a fixed budget whatever the file holds, and refuses a file over
a budget with a 413 naming it (a malformed structure it cannot walk is a 400). Each walk
steps over payloads by their length fields, so its own work is bounded by the budget, not
by the file's size; runs of bytes (JPEG fill bytes, entropy-coded data) are skipped by one
search in C.

The budgets sit far above what encoders write (see each constant) and far below what
costs: a file at a budget costs Pillow at most ~90 ms beyond its pixels (32 inflated text
chunks; docs/upload-limits.md has the measurements). ``check_structure`` also says what
reading a file's structure costs beyond its pixels, in pixels, so that the request's pixel
budget counts it. What libjpeg, zlib, libwebp and Pillow's C decoders do with the data
(entropy-coded scans, IDAT contents, LZW sub-blocks inside a GIF frame) is bounded by the
pixel limits instead.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from app.core.errors import BadImageError, PayloadTooLargeError

# JPEG: markers after the SOI up to the EOI (each costs Pillow a Python step before the
# first scan, and our walk one after it). Cameras write about 10-20 (APPn, DQT, DHT, SOF,
# SOS, a progressive file ~20 more); a multi-megabyte extended XMP or ICC profile in 64 KiB
# APPn pieces adds one per piece.
MAX_JPEG_SEGMENTS = 1024
# 0xFF fill bytes and stray bytes between segments before the first scan, which Pillow
# steps one per Python iteration (~0.5 us each). Encoders write none.
MAX_JPEG_PADDING_BYTES = 4096
# PNG chunks up to the IEND (or the next APNG frame), IDAT included, which Pillow reads one
# by one in Python. Encoders write IDAT chunks of 8-64 KiB (libpng 8 KiB), so an upload of
# MAX_UPLOAD_BYTES (10 MiB) holds at most ~1,300 of them; 4096 leaves room for 2.5 KiB
# chunks and ancillary ones.
MAX_PNG_CHUNKS = 4096
# Compressed PNG text and profile chunks (zTXt, iTXt, iCCP): Pillow inflates each, up to
# 1 MB, in memory (its MAX_TEXT_CHUNK). Writers add a handful (ImageMagick's raw profiles,
# an ICC profile); 32 bound the inflating to 32 MB.
MAX_PNG_COMPRESSED_CHUNKS = 32
# GIF extension blocks and the sub-blocks within them before the first image, read by
# Pillow in Python. Encoders write a handful of extensions (graphic control, loop count,
# comments, XMP: a 10 KB XMP packet reads as ~150 sub-blocks); a 255-byte sub-block each,
# 4096 sub-blocks carry 1 MB of comments.
MAX_GIF_EXTENSIONS = 256
MAX_GIF_SUB_BLOCKS = 4096
# TIFF: entries of the first IFD (only the first frame is decoded, and Pillow reads no
# other IFD for it); real files have 10-100, each tag at most once.
MAX_TIFF_IFD_ENTRIES = 1024
# Strips or tiles of the first image (the count field of StripOffsets/TileOffsets, each
# decoded in a Python loop by Pillow, ~7 us a strip). 8192 is one strip per row of an
# image 8192 rows tall, or 32x32 tiles of a 2000x2000 one; Pillow writes a strip per
# 64 KiB (at most 500 at 4 MP), libtiff one per 8 KiB (at most 1300 in 10 MiB).
MAX_TIFF_STRIPS = 8192
# Numeric values (all but BYTE, ASCII and UNDEFINED) of the first IFD's entries, which
# Pillow unpacks to Python tuples and lists when it reads the tag: room for a 16-bit
# palette (196,608 values) and the strip limit's offsets and byte counts.
MAX_TIFF_VALUES = 262_144
# WebP: top-level RIFF chunks, each listed by libwebp's demuxer (an animation has one per
# frame); C, but its memory grows with the count.
MAX_WEBP_CHUNKS = 4096
# BMP: Pillow decodes run-length (RLE8/RLE4) data in Python, at worst one iteration per
# pixel (~0.2 us); 512x512 bounds that to 40-80 ms. Uncompressed BMPs decode in C.
MAX_BMP_RLE_PIXELS = 512 * 512

# What reading each structure costs the decoder beyond its pixels, in pixels: the CPU of
# decoding one pixel at full size (~36 ns, a 16-bit RGBA PNG) is the unit, the rest
# measured by benchmarks/hostile_bench.py at each budget. The first ``_FREE_STRUCTURES``
# of each kind are free (what every file has), so an ordinary file costs its pixels only;
# a file near a budget weighs on its request's pixel budget (MAX_REQUEST_PIXELS) like the
# pixels it costs, so a request cannot multiply it by sending many.
_PIXELS_PER_JPEG_SEGMENT = 20  # ~0.7 us
_PIXELS_PER_PNG_CHUNK = 100  # ~3.4 us
_PIXELS_PER_COMPRESSED_CHUNK = 65_536  # ~2.6 ms to inflate 1 MB
_PIXELS_PER_GIF_SUB_BLOCK = 16  # ~0.5 us
_PIXELS_PER_TIFF_STRIP = 160  # ~6 us beyond the strip's pixels
_PIXELS_PER_IFD_ENTRY = 256  # ~8.5 us
_PIXELS_PER_WEBP_CHUNK = 16  # ~0.5 us
_EXTRA_PIXELS_PER_RLE_PIXEL = 3  # ~0.16 us in Python against ~0.04 us in C
_FREE_STRUCTURES = 64
_FREE_COMPRESSED_CHUNKS = 4

# JPEG markers that stand alone (no length field): TEM and the restart markers RST0-RST7.
_STANDALONE_MARKERS = frozenset((0x01, *range(0xD0, 0xD8)))
_START_OF_SCAN, _END_OF_IMAGE, _APP1 = 0xDA, 0xD9, 0xE1
# Start-of-frame markers: 0xC0-0xCF but for DHT, JPG and DAC.
_START_OF_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Inside entropy-coded data a 0xFF byte is followed by 0x00 (stuffing) or a restart marker;
# anything else is the next marker, where the scan ends.
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_FILL = re.compile(rb"\xff+")  # fill bytes before a marker, skipped in one C call
_PNG_COMPRESSED = frozenset((b"zTXt", b"iTXt", b"iCCP"))
_EXIF_PREFIX = re.compile(rb"^(Exif\x00\x00){1,2}")  # as Pillow strips it
_TIFF_BYTE_TYPES = frozenset((1, 2, 7))  # BYTE, ASCII, UNDEFINED: kept as bytes by Pillow
_TIFF_STRIP_TAGS = frozenset((273, 279, 324, 325))  # Strip/Tile Offsets and ByteCounts
_TIFF_OFFSET_TAGS = frozenset((273, 324))  # StripOffsets, TileOffsets: one per strip/tile
_BMP_RLE = frozenset((1, 2))  # BI_RLE8, BI_RLE4


@dataclass(frozen=True)
class JpegLayout:
    """What the walk of a JPEG found: its start-of-frame marker (None if there is none
    before the first scan), whether an APP1 segment (EXIF or XMP, where an orientation
    lives) precedes the first scan, and its scans (counted up to the scan limit + 1)."""

    frame: int | None
    has_app1: bool
    scans: int
    segments: int  # the markers walked, padding runs included


@dataclass(frozen=True)
class Structure:
    """What the structure walk found: a JPEG's layout (None for other formats), and what
    reading the structure costs beyond the pixels, in pixels (see ``_PIXELS_PER_*``)."""

    jpeg: JpegLayout | None
    cost_pixels: int


def check_structure(data: bytes, filename: str, max_jpeg_scans: int) -> Structure:
    """Walk ``data``'s structure within the budgets above (and ``max_jpeg_scans``).

    Raises 413 for a file over a budget, 400 for a structure that cannot be walked. Data in
    no supported format passes untouched, for the decoder to name. A truncated file passes
    as far as it goes: the decoder reports it.
    """
    if data.startswith(b"\xff\xd8\xff"):
        layout = walk_jpeg(data, filename, MAX_JPEG_SEGMENTS, max_jpeg_scans)
        if layout.scans > max_jpeg_scans:
            raise PayloadTooLargeError(
                f"{filename}: JPEG with more than {max_jpeg_scans} scans "
                "(each scan is decoded over the whole image; ordinary files have at most 10)"
            )
        return Structure(layout, _over_free(layout.segments) * _PIXELS_PER_JPEG_SEGMENT)
    cost = 0
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        cost = _walk_png(data, filename)
    elif data.startswith((b"GIF87a", b"GIF89a")):
        cost = _walk_gif(data, filename)
    elif data.startswith((b"II", b"MM")):
        cost = _walk_tiff(data, filename, "a TIFF")
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        cost = _walk_webp(data, filename)
    elif data.startswith(b"BM"):
        cost = _check_bmp(data, filename)
    return Structure(None, cost)


def _over_free(count: int, free: int = _FREE_STRUCTURES) -> int:
    return max(count - free, 0)


def walk_jpeg(data: bytes, filename: str, max_segments: int, max_scans: int) -> JpegLayout:
    """Walk a JPEG's markers from its SOI to its EOI, or until it has found ``max_scans``
    + 1 scans, within ``max_segments`` markers and ``MAX_JPEG_PADDING_BYTES`` before the
    first scan (``max_scans=0``: up to the first scan, all a header check needs).

    Each run of stray or fill bytes and each scan's entropy-coded data is skipped by one
    search in C (``_skip_padding``, a regular expression), so the work is at most
    ``max_segments`` Python steps whatever ``data`` holds. Raises 413 past a budget and 400
    for a segment length under 2.
    """
    position, end = 2, len(data)
    frame, has_app1, scans, segments, padding = None, False, 0, 0, 0
    while position + 1 < end:
        segments += 1
        if segments > max_segments:
            raise PayloadTooLargeError(
                f"{filename}: a JPEG with more than {max_segments} segments (markers); "
                "ordinary files have fewer than 100"
            )
        marker = data[position + 1]
        if data[position] != 0xFF or marker == 0xFF or marker == 0x00:
            # before the first scan, no further than the padding budget allows
            window = end if scans else min(end, position + MAX_JPEG_PADDING_BYTES - padding + 2)
            position, skipped = _skip_padding(data, position, window)
            if scans == 0:
                padding += skipped
                if padding > MAX_JPEG_PADDING_BYTES:
                    raise PayloadTooLargeError(
                        f"{filename}: a JPEG with more than {MAX_JPEG_PADDING_BYTES} fill "
                        "bytes or stray bytes between its segments before its first scan "
                        "(encoders write none)"
                    )
            continue
        if marker == _END_OF_IMAGE:
            break
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        if position + 4 > end:
            break  # truncated: the decoder says so
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2:
            raise BadImageError(
                f"{filename}: corrupt JPEG: segment 0x{marker:02X} has length {length}"
            )
        position += 2 + length
        if marker == _START_OF_SCAN:
            scans += 1
            if scans > max_scans:
                break
            found = _MARKER_AFTER_SCAN.search(data, position)
            position = found.start() if found else end
        elif scans == 0:
            has_app1 = has_app1 or marker == _APP1
            if marker in _START_OF_FRAME and frame is None:
                frame = marker
    return JpegLayout(frame, has_app1, scans, segments)


def _skip_padding(data: bytes, position: int, window: int) -> tuple[int, int]:
    """Where the marker after the stray bytes or 0xFF fill bytes at ``position`` starts, and
    how many bytes that skips; one search in C, no further than ``window``. A ``0xFF 0x00``
    pair outside a scan is stray bytes too."""
    if data[position] != 0xFF:
        found = data.find(b"\xff", position, window)
        after = found if found >= 0 else window
        return after, after - position
    fill = _FILL.match(data, position, window)
    assert fill is not None  # data[position] is 0xFF
    last = fill.end() - 1  # the 0xFF that starts the marker
    if last + 1 < len(data) and data[last + 1] == 0x00:
        last += 2
    return last, last - position


def _walk_png(data: bytes, filename: str) -> int:
    """Count a PNG's chunks up to its IEND, or up to the second frame's fcTL of an APNG
    (where Pillow stops reading for the first frame); each step jumps a whole chunk."""
    position, end, chunks, compressed, seen_data = 8, len(data), 0, 0, False
    while position + 8 <= end:
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise PayloadTooLargeError(
                f"{filename}: a PNG with more than {MAX_PNG_CHUNKS} chunks (encoders write "
                "image data in 8-64 KiB chunks; a 10 MiB file needs fewer than 1,300)"
            )
        length, kind = struct.unpack_from(">I4s", data, position)
        if length > 0x7FFFFFFF:
            raise BadImageError(f"{filename}: corrupt PNG: chunk length {length}")
        if kind == b"IEND" or (kind == b"fcTL" and seen_data):
            break
        if kind in _PNG_COMPRESSED:
            compressed += 1
            if compressed > MAX_PNG_COMPRESSED_CHUNKS:
                raise PayloadTooLargeError(
                    f"{filename}: a PNG with more than {MAX_PNG_COMPRESSED_CHUNKS} compressed "
                    "text or profile chunks (zTXt, iTXt, iCCP; each inflates to up to 1 MB)"
                )
        seen_data = seen_data or kind == b"IDAT"
        position += 12 + length
    return (
        _over_free(chunks) * _PIXELS_PER_PNG_CHUNK
        + _over_free(compressed, _FREE_COMPRESSED_CHUNKS) * _PIXELS_PER_COMPRESSED_CHUNK
    )


def _walk_gif(data: bytes, filename: str) -> int:
    """Walk a GIF's extension blocks and their sub-blocks up to its first image descriptor;
    the image's own data sub-blocks are read by Pillow's C decoder."""
    if len(data) < 13:
        return 0
    flags, position, end = data[10], 13, len(data)
    if flags & 0x80:  # global colour table
        position += 3 << ((flags & 7) + 1)
    extensions = sub_blocks = 0
    while position < end:
        introducer = data[position]
        if introducer in b",;":  # the first image, or the trailer
            break
        if introducer != 0x21:
            raise BadImageError(
                f"{filename}: corrupt GIF: byte 0x{introducer:02X} at {position} starts no block"
            )
        extensions += 1
        if extensions > MAX_GIF_EXTENSIONS:
            raise PayloadTooLargeError(
                f"{filename}: a GIF with more than {MAX_GIF_EXTENSIONS} extension blocks "
                "before its first image"
            )
        position += 2
        while position < end:
            sub_blocks += 1
            if sub_blocks > MAX_GIF_SUB_BLOCKS:
                raise PayloadTooLargeError(
                    f"{filename}: a GIF with more than {MAX_GIF_SUB_BLOCKS} sub-blocks "
                    "before its first image"
                )
            size = data[position]
            position += 1 + size
            if size == 0:
                break
    return _over_free(sub_blocks) * _PIXELS_PER_GIF_SUB_BLOCK


def check_exif(exif: bytes, filename: str) -> int:
    """Bound the first IFD of an EXIF block (a JPEG's APP1, a PNG's eXIf chunk or raw
    profile, a WebP's EXIF chunk) as a TIFF's: Pillow parses its entries in Python to find
    the orientation, and outside a JPEG segment the block may hold 65,535 of them. Returns
    what parsing it costs, in pixels."""
    return _walk_tiff(_EXIF_PREFIX.sub(b"", exif[:12]) + exif[12:], filename, "an EXIF block")


def _walk_tiff(data: bytes, filename: str, what: str) -> int:
    """Read the first IFD's entry count and each entry's tag, type and value count (never
    the values), classic or BigTIFF: its entries, strips or tiles and numeric values.
    ``what`` names the file in messages ("a TIFF")."""
    order = "<" if data.startswith(b"II") else ">"
    version = int.from_bytes(data[2:4], "little" if order == "<" else "big")
    if version == 42:
        offset_format, count_format, entry_format = "I", "H", "HHI"
    elif version == 43:
        offset_format, count_format, entry_format = "Q", "Q", "HHQ"
    else:
        return 0  # not a TIFF Pillow reads either
    header = struct.calcsize(order + offset_format)
    first = 4 if version == 42 else 8
    if len(data) < first + header:
        return 0
    (ifd,) = struct.unpack_from(order + offset_format, data, first)
    count_size = struct.calcsize(order + count_format)
    if ifd + count_size > len(data):
        return 0
    (entries,) = struct.unpack_from(order + count_format, data, ifd)
    if entries > MAX_TIFF_IFD_ENTRIES:
        raise PayloadTooLargeError(
            f"{filename}: {what} with more than {MAX_TIFF_IFD_ENTRIES} IFD entries "
            f"({entries}; real files have fewer than 100)"
        )
    entry_size = struct.calcsize(order + entry_format) + header
    values = strips = 0
    position = ifd + count_size
    for _ in range(entries):
        if position + entry_size > len(data):
            break
        tag, kind, count = struct.unpack_from(order + entry_format, data, position)
        position += entry_size
        if tag in _TIFF_STRIP_TAGS and count > MAX_TIFF_STRIPS:
            raise PayloadTooLargeError(
                f"{filename}: {what} with more than {MAX_TIFF_STRIPS} strips or tiles "
                f"({count}; each is decoded separately)"
            )
        if tag in _TIFF_OFFSET_TAGS:
            strips = max(strips, count)
        if kind not in _TIFF_BYTE_TYPES:
            values += count
    if values > MAX_TIFF_VALUES:
        raise PayloadTooLargeError(
            f"{filename}: {what} whose first IFD holds more than {MAX_TIFF_VALUES} "
            f"numeric values ({values})"
        )
    return _over_free(entries) * _PIXELS_PER_IFD_ENTRY + _over_free(strips) * _PIXELS_PER_TIFF_STRIP


def _walk_webp(data: bytes, filename: str) -> int:
    """Count a WebP's top-level RIFF chunks, each step jumping a whole chunk."""
    position, end, chunks = 12, min(len(data), 8 + int.from_bytes(data[4:8], "little")), 0
    while position + 8 <= end:
        chunks += 1
        if chunks > MAX_WEBP_CHUNKS:
            raise PayloadTooLargeError(
                f"{filename}: a WebP with more than {MAX_WEBP_CHUNKS} chunks "
                "(an animation has one per frame)"
            )
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        position += 8 + size + (size & 1)
    return _over_free(chunks) * _PIXELS_PER_WEBP_CHUNK


def _check_bmp(data: bytes, filename: str) -> int:
    """Refuse a run-length-encoded BMP over ``MAX_BMP_RLE_PIXELS``: Pillow decodes it in
    Python. Other BMPs (and headers too short to say) go on to the decoder."""
    if len(data) < 34 or int.from_bytes(data[14:18], "little") < 40:
        return 0  # an OS/2 header has no compression field
    width, height, _, _, compression = struct.unpack_from("<iiHHI", data, 18)
    pixels = abs(width) * abs(height)
    if compression in _BMP_RLE and pixels > MAX_BMP_RLE_PIXELS:
        raise PayloadTooLargeError(
            f"{filename}: a run-length-encoded BMP of {abs(width)}x{abs(height)}, over the "
            f"{MAX_BMP_RLE_PIXELS} pixel limit for those (decoded in Python, pixel by pixel)"
        )
    return pixels * _EXTRA_PIXELS_PER_RLE_PIXEL if compression in _BMP_RLE else 0
