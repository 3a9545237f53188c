"""Sample uploads from the shared data and the raw HTTP requests that carry them.

Requests are encoded once, before a run, so the load generator only copies bytes.
"""

from __future__ import annotations

import secrets
import zipfile
from collections.abc import Sequence
from pathlib import Path

SIGNS_GLOB = "signs/train/*.jpg"
MALARIA_ZIP = "malaria/cell_images.zip"


def signs_paths(data_dir: Path, count: int) -> list[Path]:
    """The first ``count`` SIGNS JPEGs (64x64 RGB), sorted by name for repeatability; each
    name starts with the image's class (``0_IMG_5864.jpg``)."""
    paths = sorted(data_dir.glob(SIGNS_GLOB))[:count]
    if len(paths) < count:
        raise FileNotFoundError(f"need {count} images under {data_dir / 'signs/train'}")
    return paths


def signs_images(data_dir: Path, count: int) -> list[bytes]:
    """The bytes of ``signs_paths``."""
    return [path.read_bytes() for path in signs_paths(data_dir, count)]


def malaria_images(data_dir: Path, count: int) -> list[bytes]:
    """``count`` malaria cell PNGs read straight from the (uncompressed) zip."""
    archive_path = data_dir / MALARIA_ZIP
    if not archive_path.is_file():
        raise FileNotFoundError(f"missing {archive_path}")
    with zipfile.ZipFile(archive_path) as archive:
        names = sorted(name for name in archive.namelist() if name.endswith(".png"))
        step = max(1, len(names) // count)
        return [archive.read(name) for name in names[::step][:count]]


def multipart_body(files: Sequence[bytes], field: str = "file") -> tuple[bytes, str]:
    """Encode ``files`` as repeated ``field`` parts; return the body and its content type."""
    boundary = secrets.token_hex(16)
    parts = []
    for index, data in enumerate(files):
        suffix, mime = ("png", "image/png") if data[:4] == b"\x89PNG" else ("jpg", "image/jpeg")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="image{index}.{suffix}"\r\nContent-Type: {mime}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def raw_post(path: str, port: int, files: Sequence[bytes]) -> bytes:
    """A complete HTTP/1.1 keep-alive POST carrying ``files`` as a multipart upload."""
    body, content_type = multipart_body(files)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def write_requests(
    directory: Path, name: str, path: str, port: int, uploads: Sequence[Sequence[bytes]]
) -> list[str]:
    """Write one request file per upload (each upload is a list of files); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, files in enumerate(uploads):
        target = directory / f"{name}-{index}.http"
        target.write_bytes(raw_post(path, port, files))
        written.append(str(target))
    return written
