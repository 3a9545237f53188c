"""The bounded structural walks: every structure flood is refused naming its budget, files
at a budget still decode, and ordinary files (the training data, whatever Pillow writes)
pass with room to spare."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from app.core.errors import BadImageError, PayloadTooLargeError
from app.core.image_structure import (
    MAX_BMP_RLE_PIXELS,
    MAX_GIF_EXTENSIONS,
    MAX_GIF_SUB_BLOCKS,
    MAX_JPEG_PADDING_BYTES,
    MAX_JPEG_SEGMENTS,
    MAX_PNG_CHUNKS,
    MAX_PNG_COMPRESSED_CHUNKS,
    MAX_TIFF_IFD_ENTRIES,
    MAX_TIFF_STRIPS,
    MAX_TIFF_VALUES,
    MAX_WEBP_CHUNKS,
    check_exif,
    check_structure,
    walk_jpeg,
)
from benchmarks.hostile_inputs import (
    JPEG_APP3,
    PNG_PRIVATE_CHUNK,
    gif_comment_flood,
    jpeg_fill_flood,
    jpeg_segment_flood,
    png_chunk_flood,
    png_text_flood,
    rle_bmp_line_ends,
    small_jpeg,
    tiff_entry_flood,
    tiff_strip_flood,
    webp_chunk_flood,
)
from tests.app.samples import gradient_image

SHARED_DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
# The other structures of a Pillow JPEG (APP0, 2 DQT, SOF0, 4 DHT, SOS, EOI) count too.
JPEG_OWN_MARKERS = 10

# (file over one budget, the phrase its 413 names)
OVER_BUDGET = [
    (jpeg_segment_flood(MAX_JPEG_SEGMENTS), f"more than {MAX_JPEG_SEGMENTS} segments"),
    (jpeg_segment_flood(MAX_JPEG_SEGMENTS, JPEG_APP3), "segments"),
    (jpeg_fill_flood(MAX_JPEG_PADDING_BYTES + 1), f"more than {MAX_JPEG_PADDING_BYTES} fill"),
    (png_chunk_flood(MAX_PNG_CHUNKS), f"more than {MAX_PNG_CHUNKS} chunks"),
    (png_chunk_flood(MAX_PNG_CHUNKS, PNG_PRIVATE_CHUNK), "PNG with more than"),
    (png_text_flood(MAX_PNG_COMPRESSED_CHUNKS + 1), f"more than {MAX_PNG_COMPRESSED_CHUNKS} comp"),
    (gif_comment_flood(MAX_GIF_SUB_BLOCKS), f"more than {MAX_GIF_SUB_BLOCKS} sub-blocks"),
    (
        gif_comment_flood(MAX_GIF_EXTENSIONS + 1, extensions=MAX_GIF_EXTENSIONS + 1),
        f"more than {MAX_GIF_EXTENSIONS} extension blocks",
    ),
    (tiff_strip_flood(MAX_TIFF_STRIPS + 1), f"more than {MAX_TIFF_STRIPS} strips"),
    (tiff_entry_flood(MAX_TIFF_IFD_ENTRIES + 1), f"more than {MAX_TIFF_IFD_ENTRIES} IFD entries"),
    (rle_bmp_line_ends(513, 512), "run-length-encoded BMP of 513x512"),
    (webp_chunk_flood(MAX_WEBP_CHUNKS), f"more than {MAX_WEBP_CHUNKS} chunks"),
]


@pytest.mark.parametrize(("data", "phrase"), OVER_BUDGET)
def test_every_structure_flood_is_refused_naming_its_budget(data: bytes, phrase: str) -> None:
    with pytest.raises(PayloadTooLargeError, match=phrase) as refused:
        check_structure(data, "flood", max_jpeg_scans=32)
    assert refused.value.detail.startswith("flood: ")


AT_BUDGET = [
    jpeg_segment_flood(MAX_JPEG_SEGMENTS - JPEG_OWN_MARKERS),
    jpeg_fill_flood(MAX_JPEG_PADDING_BYTES),
    png_chunk_flood(MAX_PNG_CHUNKS - 2),  # IHDR and IEND
    png_text_flood(MAX_PNG_COMPRESSED_CHUNKS),
    gif_comment_flood(MAX_GIF_SUB_BLOCKS - 1),  # and the terminator
    gif_comment_flood(MAX_GIF_EXTENSIONS, extensions=MAX_GIF_EXTENSIONS),
    tiff_strip_flood(MAX_TIFF_STRIPS),
    tiff_entry_flood(MAX_TIFF_IFD_ENTRIES),
    rle_bmp_line_ends(512, 512),
    webp_chunk_flood(MAX_WEBP_CHUNKS - 2),  # VP8X and VP8L
]


@pytest.mark.parametrize("data", AT_BUDGET)
def test_files_at_each_budget_pass_and_decode(data: bytes) -> None:
    check_structure(data, "x", max_jpeg_scans=32)
    with Image.open(io.BytesIO(data)) as image:
        image.load()


def test_the_training_photos_pass() -> None:
    photos = sorted((SHARED_DATA / "signs" / "train").glob("*.jpg"))
    if not photos:
        pytest.skip("no SIGNS data in ../shared/data")
    assert len(photos) == 1080
    for photo in photos:
        structure = check_structure(photo.read_bytes(), photo.name, max_jpeg_scans=32)
        layout = structure.jpeg
        assert layout is not None and layout.frame is not None and layout.scans >= 1
        assert structure.cost_pixels == 0  # an ordinary file costs its pixels only


def test_a_sample_of_the_malaria_cells_passes() -> None:
    archive = SHARED_DATA / "malaria" / "cell_images.zip"
    if not archive.exists():
        pytest.skip("no malaria data in ../shared/data")
    with zipfile.ZipFile(archive) as cells:
        names = [name for name in cells.namelist() if name.endswith(".png")][::50]
        assert len(names) > 400
        for name in names:
            structure = check_structure(cells.read(name), name, max_jpeg_scans=32)
            assert structure.jpeg is None and structure.cost_pixels == 0


# What Pillow writes at the full-decode pixel limit (2000 x 2000) in each format and mode.
PILLOW_WRITES = [
    ("JPEG", "RGB", {}),
    ("JPEG", "L", {"progressive": True}),
    ("JPEG", "CMYK", {}),
    ("PNG", "RGBA", {"compress_level": 1}),
    ("PNG", "I;16", {"compress_level": 1}),
    ("PNG", "P", {"compress_level": 1}),
    ("GIF", "P", {}),
    ("WEBP", "RGBA", {"lossless": True, "method": 0}),
    ("WEBP", "RGB", {"method": 0}),
    ("BMP", "RGB", {}),
    ("BMP", "1", {}),
    ("TIFF", "RGBA", {"compression": "tiff_deflate"}),
    ("TIFF", "CMYK", {"compression": "tiff_lzw"}),
    ("TIFF", "I;16", {}),
    ("TIFF", "RGB", {"compression": "jpeg"}),
    ("TIFF", "1", {"compression": "group4"}),
]


@pytest.mark.parametrize(("image_format", "mode", "save"), PILLOW_WRITES)
def test_what_pillow_writes_at_the_pixel_limit_passes(
    image_format: str, mode: str, save: dict[str, object]
) -> None:
    buffer = io.BytesIO()
    gradient_image((2000, 2000), mode).save(buffer, format=image_format, **save)
    structure = check_structure(buffer.getvalue(), "x", max_jpeg_scans=32)
    assert structure.cost_pixels <= 2000 * 2000 // 100  # charged (almost) its pixels only


def test_a_jpeg_walk_counts_frames_app1_and_scans() -> None:
    plain = small_jpeg()
    layout = walk_jpeg(plain, "x", MAX_JPEG_SEGMENTS, max_scans=32)
    assert (layout.frame, layout.has_app1, layout.scans) == (0xC0, False, 1)
    buffer = io.BytesIO()
    gradient_image((64, 64)).save(buffer, format="JPEG", exif=Image.Exif().tobytes())
    assert walk_jpeg(buffer.getvalue(), "x", MAX_JPEG_SEGMENTS, max_scans=32).has_app1
    padded = jpeg_fill_flood(100)
    assert walk_jpeg(padded, "x", MAX_JPEG_SEGMENTS, max_scans=32).frame == 0xC0
    header_only = walk_jpeg(jpeg_segment_flood(5), "x", 20, max_scans=0)
    assert header_only.scans == 1  # stopped at the first scan


def test_stray_bytes_count_with_fill_bytes() -> None:
    data = small_jpeg()
    table = data.index(b"\xff\xdb")  # after the APP0 segment

    def with_stray(count: int) -> bytes:
        return data[:table] + b"\x00" * count + data[table:]

    with pytest.raises(PayloadTooLargeError, match="stray bytes"):
        check_structure(with_stray(MAX_JPEG_PADDING_BYTES + 1), "x", 32)
    check_structure(with_stray(10), "x", 32)  # a few: Pillow and libjpeg skip them
    with Image.open(io.BytesIO(with_stray(10))) as image:
        image.load()


def test_malformed_structures_are_400() -> None:
    data = small_jpeg()
    with pytest.raises(BadImageError, match="segment 0xE0 has length 1"):
        check_structure(data[:4] + b"\x00\x01" + data[6:], "x", 32)
    gif = gif_comment_flood(1)
    start = gif.index(b"!\xfe")
    with pytest.raises(BadImageError, match="starts no block"):
        check_structure(gif[:start] + b"\x07" + gif[start:], "x", 32)
    png = png_chunk_flood(1, PNG_PRIVATE_CHUNK)
    with pytest.raises(BadImageError, match="chunk length"):
        check_structure(png[:33] + b"\xff\xff\xff\xff" + png[37:], "x", 32)


def test_truncated_files_are_left_to_the_decoder() -> None:
    for data in (small_jpeg(), png_chunk_flood(10), gif_comment_flood(10), tiff_strip_flood(9)):
        for end in (3, 14, 40, len(data) // 2):
            check_structure(data[:end], "x", 32)


def test_tiff_numeric_values_and_bigtiff_are_bounded() -> None:
    # one SHORT entry with more values than the budget, its values out of line
    entry = struct.pack("<HHII", 320, 3, MAX_TIFF_VALUES + 1, 26)  # ColorMap
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + entry + bytes(4)
    with pytest.raises(PayloadTooLargeError, match="numeric values"):
        check_structure(tiff, "x", 32)
    big = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", 100_000)
    with pytest.raises(PayloadTooLargeError, match="IFD entries"):
        check_structure(big, "x", 32)
    strips = struct.pack("<HHQQ", 273, 16, MAX_TIFF_STRIPS + 1, 0)
    big = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", 1) + strips
    with pytest.raises(PayloadTooLargeError, match="strips"):
        check_structure(big, "x", 32)


def test_only_run_length_bmps_have_the_small_pixel_limit() -> None:
    side = int(MAX_BMP_RLE_PIXELS**0.5) + 1
    buffer = io.BytesIO()
    Image.new("P", (side, side)).save(buffer, format="BMP")  # uncompressed: decoded in C
    check_structure(buffer.getvalue(), "x", 32)


def test_exif_blocks_are_bounded_like_a_tiff_ifd() -> None:
    flood = tiff_entry_flood(MAX_TIFF_IFD_ENTRIES + 1, side=1)
    for block in (flood, b"Exif\x00\x00" + flood, b"Exif\x00\x00" * 2 + flood):
        with pytest.raises(PayloadTooLargeError, match="an EXIF block with more than"):
            check_exif(block, "x")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    check_exif(exif.tobytes(), "x")
    check_exif(b"Exif\x00\x00", "x")  # empty: nothing to parse
