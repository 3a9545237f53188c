"""Upload decoding without HTTP: formats, modes, orientation and every limit."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
import zlib

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from app.core.errors import BadImageError, PayloadTooLargeError, UnsupportedImageError
from app.core.image_structure import MAX_JPEG_PADDING_BYTES
from app.core.imaging import (
    FULL_DECODE_WEIGHT,
    DecodeLimits,
    count_jpeg_scans,
    decode_for_model,
    decode_upload,
    decodes_straight_at,
    fit_within,
    to_png,
)
from benchmarks.hostile_inputs import (
    HostileFile,
    flat_png,
    gif_comment_flood,
    jpeg_fill_flood,
    jpeg_segment_flood,
    progressive_jpeg,
    structure_floods,
)
from contract.pixels import model_input
from tests.app.samples import gradient_image, image_bytes

LIMITS = DecodeLimits(
    max_bytes=1_000_000, max_pixels=1_000_000, max_full_decode_pixels=1_000_000, max_jpeg_scans=32
)
LARGE = DecodeLimits(10**7, 10**7, 10**7, 32)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_supported_format_decodes_to_rgb_at_its_size(image_format: str) -> None:
    image = decode_upload(image_bytes(image_format, size=(40, 30)), "x", LIMITS)
    assert image.mode == "RGB"
    assert image.size == (40, 30)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "1"])
def test_every_colour_mode_becomes_rgb(mode: str) -> None:
    image_format = "TIFF" if mode in ("CMYK", "I") else "PNG"
    image = decode_upload(image_bytes(image_format, mode=mode), "x", LIMITS)
    assert image.mode == "RGB"
    assert image.size == (64, 64)


def test_sixteen_bit_grey_is_scaled_to_eight_bits() -> None:
    grey = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG")
    pixels = np.asarray(decode_upload(buffer.getvalue(), "x", LIMITS))
    assert pixels.min() == 255


def test_transparent_pixels_are_composited_over_black() -> None:
    image = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert np.asarray(decode_upload(buffer.getvalue(), "x", LIMITS)).max() == 0


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    data = image_bytes("JPEG", size=(40, 20), exif=exif.tobytes())
    assert decode_upload(data, "x", LIMITS).size == (20, 40)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    red, green, blue = np.asarray(decode_upload(buffer.getvalue(), "x", LIMITS))[0, 0]
    assert red > 200 and blue < 50


def test_too_many_bytes_is_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLargeError, match="bytes"):
        decode_upload(b"\0" * 101, "big.png", dataclasses.replace(LIMITS, max_bytes=100))


def test_too_many_pixels_is_refused() -> None:
    with pytest.raises(PayloadTooLargeError, match="50x50"):
        decode_upload(
            image_bytes("PNG", size=(50, 50)),
            "wide.png",
            dataclasses.replace(LIMITS, max_pixels=2499),
        )


def test_pixel_limit_is_read_from_the_header_without_decoding() -> None:
    """A PNG whose header claims 20000 x 20000 pixels is refused; its data is never read."""
    data = image_bytes("PNG", size=(100, 100))
    # PNG: 8-byte signature, then IHDR = length (4), type (4), 13 bytes of fields, CRC (4).
    fields = (20_000).to_bytes(4, "big") * 2 + data[24:29]
    ihdr = data[8:12] + b"IHDR" + fields + zlib.crc32(b"IHDR" + fields).to_bytes(4, "big")
    with pytest.raises(PayloadTooLargeError, match="pixel limit"):
        decode_upload(data[:8] + ihdr + data[33:], "bomb.png", LIMITS)


@pytest.mark.parametrize(
    "data", [b"hello, I am text", b"%PDF-1.4 not an image", image_bytes("ICO", size=(16, 16))]
)
def test_non_images_and_unsupported_formats_are_415(data: bytes) -> None:
    with pytest.raises(UnsupportedImageError, match="supported format"):
        decode_upload(data, "x.bin", LIMITS)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_truncated_images_are_400(image_format: str) -> None:
    data = image_bytes(image_format, size=(64, 64))
    with pytest.raises(BadImageError, match="x.img"):
        decode_upload(data[: len(data) // 2], "x.img", LIMITS)


def test_empty_upload_is_400() -> None:
    with pytest.raises(BadImageError, match="empty"):
        decode_upload(b"", "empty.png", LIMITS)


def test_png_round_trip_keeps_pixels_and_resizes_on_request() -> None:
    pixels = model_input(gradient_image((16, 16)), 16, 16)
    decoded = Image.open(io.BytesIO(to_png(pixels)))
    assert decoded.format == "PNG"
    assert np.abs(np.asarray(decoded, np.float32) / 255 - pixels).max() <= 1 / 255
    assert Image.open(io.BytesIO(to_png(pixels, size=(30, 20)))).size == (30, 20)


def test_large_jpeg_decodes_reduced_for_the_model_but_reports_its_full_size() -> None:
    data = image_bytes("JPEG", size=(2000, 1200))
    decoded = decode_for_model(data, "x", LARGE, target_size=(64, 64))
    assert decoded.original_size == (2000, 1200)
    assert min(decoded.image.size) >= 64 and decoded.image.size[0] < 2000
    reduced = model_input(decoded.image, 64, 64)
    full = model_input(decode_upload(data, "x", LARGE), 64, 64)
    assert np.abs(reduced - full).mean() < 0.02  # same picture, slightly different filtering


def test_original_size_follows_the_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    data = image_bytes("JPEG", size=(800, 400), exif=exif.tobytes())
    decoded = decode_for_model(data, "x", LARGE, target_size=(48, 48))
    assert decoded.original_size == (400, 800)
    assert decoded.image.size[0] < decoded.image.size[1]


def test_sixteen_bit_values_scale_as_training_does_without_floats() -> None:
    """Integer division by 257 equals training's truncated float division for every value."""
    values = np.arange(0, 65536, dtype=np.uint16).reshape(256, 256)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    pixels = np.asarray(decode_upload(buffer.getvalue(), "x", LIMITS))[..., 0]
    expected = np.clip(values.astype(np.float64) / 257.0, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, expected)


def test_jpeg_scans_are_counted_from_the_markers() -> None:
    assert count_jpeg_scans(image_bytes("JPEG"), stop_after=100) == 1
    assert count_jpeg_scans(image_bytes("JPEG", progressive=True), stop_after=100) == 10
    assert count_jpeg_scans(progressive_jpeg(64, 300), stop_after=100) == 101  # stops early


def test_a_jpeg_over_the_scan_limit_is_refused_before_decoding() -> None:
    """300 scans over 1000 x 1000 take about 1 s of CPU to decode; the refusal takes none."""
    data = progressive_jpeg(1000, 300)
    started = time.process_time()
    with pytest.raises(PayloadTooLargeError, match="more than 32 scans"):
        decode_for_model(data, "scans.jpg", LIMITS, target_size=(64, 64))
    assert time.process_time() - started < 0.1
    at_limit = decode_for_model(progressive_jpeg(1000, 32), "ok.jpg", LIMITS, (64, 64))
    assert at_limit.original_size == (1000, 1000)


def test_images_decoded_at_full_size_have_the_smaller_pixel_limit() -> None:
    limits = dataclasses.replace(LIMITS, max_full_decode_pixels=100 * 100)
    baseline = image_bytes("JPEG", size=(200, 200))
    assert decode_for_model(baseline, "photo.jpg", limits, (64, 64)).original_size == (200, 200)
    for data, kind in (
        (image_bytes("JPEG", size=(200, 200), progressive=True), "progressive JPEG"),
        (flat_png(200, 200), "PNG"),
    ):
        with pytest.raises(PayloadTooLargeError, match=f"a {kind} is decoded at full size"):
            decode_for_model(data, "x", limits, (64, 64))
    with pytest.raises(PayloadTooLargeError, match="pixel limit"):
        decode_upload(baseline, "full.jpg", limits)  # no model size: decoded in full


def test_admit_weighs_the_header_before_anything_is_decoded() -> None:
    claims: list[int] = []

    def refuse(pixels: int) -> contextlib.nullcontext[None]:
        claims.append(pixels)
        raise PayloadTooLargeError("over the caller's budget")

    with pytest.raises(PayloadTooLargeError, match="caller's budget"):
        decode_for_model(flat_png(3000, 2000), "x", LARGE, (64, 64), admit=refuse)
    with pytest.raises(PayloadTooLargeError, match="caller's budget"):  # at reduced scale
        decode_for_model(image_bytes("JPEG", size=(3000, 2000)), "x", LARGE, (64, 64), admit=refuse)
    assert claims == [FULL_DECODE_WEIGHT * 6_000_000, 6_000_000]
    with pytest.raises(UnsupportedImageError):
        decode_for_model(b"not an image", "x", LARGE, (64, 64), admit=refuse)
    assert len(claims) == 2  # no header, no claim


def test_fit_within_keeps_the_aspect_ratio() -> None:
    assert fit_within((4000, 3000), 1024) == (1024, 768)
    assert fit_within((300, 200), 1024) == (300, 200)
    assert fit_within((1, 5000), 1024) == (1, 1024)


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    gradient_image((64, 64)).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("size", "mode", "save"),
    [
        ((64, 64), "RGB", {}),  # 4:2:0, like the SIGNS photos
        ((64, 64), "RGB", {"subsampling": 0, "quality": 95}),  # 4:4:4
        ((64, 64), "L", {}),
        ((90, 64), "RGB", {"progressive": True}),
        ((127, 40), "RGB", {"restart_marker_blocks": 1}),  # resized; just under 2x the target
    ],
)
def test_small_jpegs_decode_straight_to_the_pixels_pillow_gives(
    size: tuple[int, int], mode: str, save: dict[str, object]
) -> None:
    data = image_bytes("JPEG", size=size, mode=mode, **save)
    decoded = decode_for_model(data, "x.jpg", LIMITS, target_size=(64, 64))
    assert isinstance(decoded.image, np.ndarray)  # not Pillow: the direct path
    assert decoded.original_size == size
    by_pillow = decode_upload(data, "x.jpg", LIMITS)
    np.testing.assert_array_equal(
        model_input(decoded.image, 64, 64), model_input(by_pillow, 64, 64)
    )


@pytest.mark.parametrize(
    "data",
    [
        image_bytes("JPEG", size=(128, 128)),  # Pillow decodes it at half size
        image_bytes("JPEG", size=(64, 64), exif=Image.Exif().tobytes()),  # may turn it
        cmyk_jpeg(),
        progressive_jpeg(64, 20),  # libjpeg warns about its repeated scans; Pillow decodes it
    ],
)
def test_other_jpegs_are_left_to_pillow(data: bytes) -> None:
    decoded = decode_for_model(data, "x.jpg", LIMITS, target_size=(64, 64))
    assert isinstance(decoded.image, Image.Image)


def test_small_jpegs_keep_every_check() -> None:
    data = image_bytes("JPEG", size=(64, 64))
    with pytest.raises(BadImageError, match="x.jpg"):
        decode_for_model(data[: len(data) // 2], "x.jpg", LIMITS, target_size=(64, 64))
    with pytest.raises(PayloadTooLargeError, match="more than 32 scans"):
        decode_for_model(progressive_jpeg(64, 300), "x.jpg", LIMITS, target_size=(64, 64))
    strip = image_bytes("JPEG", size=(100, 20_000))  # a side under 128: decoded at full size
    limits = dataclasses.replace(LIMITS, max_pixels=10**7)
    with pytest.raises(PayloadTooLargeError, match="JPEG is decoded at full size"):
        decode_for_model(strip, "strip.jpg", limits, target_size=(64, 64))
    claims: list[int] = []

    def count(pixels: int) -> contextlib.nullcontext[None]:
        claims.append(pixels)
        return contextlib.nullcontext()

    decode_for_model(data, "x.jpg", LIMITS, target_size=(64, 64), admit=count)
    assert claims == [FULL_DECODE_WEIGHT * 64 * 64]  # decoded at full size


DEFAULT_LIMITS = DecodeLimits(10 * 1024 * 1024, 16_000_000, 4_000_000, 32)


@pytest.mark.parametrize("flood", structure_floods(200_000), ids=lambda flood: flood.name)
def test_structure_floods_are_refused_before_any_decoder_parses_them(
    flood: HostileFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The input gate walks the structure before Pillow or libjpeg sees a byte (an EXIF
    block: once Pillow has read the header, before it parses the block)."""

    def no_decoder(*args: object, **kwargs: object) -> None:
        raise AssertionError("a decoder was called")

    if flood.before_decoder:
        monkeypatch.setattr(Image, "open", no_decoder)
    monkeypatch.setattr(simplejpeg, "decode_jpeg_header", no_decoder)
    monkeypatch.setattr(simplejpeg, "decode_jpeg", no_decoder)
    with pytest.raises(PayloadTooLargeError, match=flood.detail_contains) as refused:
        decode_for_model(flood.data, "flood", DEFAULT_LIMITS, target_size=(64, 64))
    assert refused.value.status_code == flood.status == 413


def test_the_structure_walk_comes_before_the_pixel_checks() -> None:
    """A file over a structure budget and the pixel limits is refused for its structure:
    the header that would say how large it is was never parsed."""
    flood = gif_comment_flood(10_000, side=2000)
    limits = dataclasses.replace(LIMITS, max_pixels=100, max_full_decode_pixels=100)
    with pytest.raises(PayloadTooLargeError, match="sub-blocks"):
        decode_for_model(flood, "x.gif", limits, target_size=(64, 64))
    with pytest.raises(PayloadTooLargeError, match="pixel limit"):
        decode_for_model(gif_comment_flood(10, side=2000), "x.gif", limits, (64, 64))


def test_only_small_jpegs_with_few_markers_decode_straight() -> None:
    """The event loop's header walk gives up after a few markers (the thread path then
    applies the full budget), and refuses nothing itself."""
    assert decodes_straight_at(jpeg_segment_flood(0), (64, 64))
    assert not decodes_straight_at(jpeg_segment_flood(40), (64, 64))
    assert not decodes_straight_at(jpeg_fill_flood(MAX_JPEG_PADDING_BYTES + 1), (64, 64))
    assert not decodes_straight_at(flat_png(64, 64), (64, 64))
    decoded = decode_for_model(jpeg_segment_flood(40), "x", LIMITS, target_size=(64, 64))
    assert decoded.original_size == (64, 64)
