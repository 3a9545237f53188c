"""A small typed Python client for the cellsign API, and the ``cellsign`` command line.

The client only speaks HTTP (it never imports TensorFlow), so scripts and notebooks can call
a running server cheaply. Errors come back as :class:`CellsignError` carrying the server's
``detail``; the command line prints that detail as one line instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
API_KEY_HEADER = "X-API-Key"


class CellsignError(Exception):
    """The server refused a request; ``str(error)`` is its ``detail`` in one line."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class CellsignClient:
    """Calls ``/classify``, ``/denoise`` and ``/similar`` on one server.

    Pass ``http_client`` to reuse a configured ``httpx.Client`` (a custom transport, or
    FastAPI's ``TestClient`` in tests); otherwise the client owns one and closes it.
    With ``raw=True`` the image is sent as the request body instead of as a multipart part:
    cheaper for the server, one image per request.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        http_client: httpx.Client | None = None,
        raw: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.raw = raw
        self._headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=timeout)

    def __enter__(self) -> CellsignClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def classify(self, paths: Sequence[str | Path]) -> dict[str, Any]:
        """Classify one or several images in a single request."""
        if not paths:
            raise ValueError("classify needs at least one image path")
        if self.raw and len(paths) > 1:
            raise ValueError("a raw body carries one image: classify them one at a time")
        response = self._post("/classify", [Path(path) for path in paths])
        return response.json()

    def denoise(self, path: str | Path, size_original: bool = False) -> bytes:
        """Return the denoised image as PNG bytes (at the upload's size with ``size_original``)."""
        params = {"size": "original"} if size_original else {}
        response = self._post("/denoise", [Path(path)], params=params, accept="image/png")
        return response.content

    def similar(self, path: str | Path, k: int = 5) -> dict[str, Any]:
        """Return the ``k`` gallery cells whose encoder codes are nearest to the image's."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        response = self._post("/similar", [Path(path)], params={"k": k})
        return response.json()

    def gallery_image(self, image_url: str) -> bytes:
        """Fetch a gallery cell's PNG from an ``image_url`` returned by :meth:`similar`."""
        response = self._http.get(self._url(image_url), headers=self._headers)
        _raise_for_error(response)
        return response.content

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def _post(
        self,
        path: str,
        files: list[Path],
        params: dict[str, Any] | None = None,
        accept: str = "application/json",
    ) -> httpx.Response:
        """POST the files as multipart parts named ``file`` (or the one file as the raw body);
        read them first so a missing file fails before any network traffic."""
        headers = {**self._headers, "Accept": accept}
        if self.raw:
            (file,) = files
            # The server sniffs the format from the bytes, as it does for a form part.
            headers["Content-Type"] = "application/octet-stream"
            content = file.read_bytes()
            response = self._http.post(
                self._url(path), content=content, params=params, headers=headers
            )
        else:
            parts = [
                ("file", (file.name, file.read_bytes(), _content_type(file))) for file in files
            ]
            response = self._http.post(self._url(path), files=parts, params=params, headers=headers)
        _raise_for_error(response)
        return response


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    raise CellsignError(
        f"HTTP {response.status_code}: {error_detail(response)}", response.status_code
    )


def error_detail(response: httpx.Response) -> str:
    """The server's ``detail`` as one line, whether it is a string or FastAPI's list of
    validation errors; falls back to the response text for non-JSON errors."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str):
        return _one_line(detail)
    if isinstance(detail, list):
        messages = []
        for item in detail:
            if isinstance(item, dict):
                location = ".".join(str(part) for part in item.get("loc", []))
                message = str(item.get("msg", item))
                messages.append(f"{location}: {message}" if location else message)
            else:
                messages.append(str(item))
        return _one_line("; ".join(messages))
    text = _one_line(response.text)
    return text[:200] if text else response.reason_phrase


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _print_classification(result: dict[str, Any]) -> None:
    for prediction in result["predictions"]:
        print(
            f"{prediction['filename']}: {prediction['label']} "
            f"(confidence {prediction['confidence']:.3f})"
        )


def _print_neighbours(result: dict[str, Any]) -> None:
    for rank, neighbour in enumerate(result["results"], start=1):
        print(
            f"{rank}. id {neighbour['id']}  label {neighbour['label']}  "
            f"distance {neighbour['distance']:.4g}"
        )


def _positive_int(text: str) -> int:
    """argparse type: reject k < 1 with a usage message rather than a server round trip."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellsign", description="Call a cellsign server: classify, denoise, similar."
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("CELLSIGN_URL", DEFAULT_URL),
        help="server address (default: $CELLSIGN_URL or %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("CELLSIGN_API_KEY"),
        help="sent as X-API-Key (default: $CELLSIGN_API_KEY)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="send each image as the raw request body instead of a multipart form "
        "(one image per request)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    classify = commands.add_parser("classify", help="predict the hand sign in images")
    classify.add_argument("images", nargs="+", type=Path)

    denoise = commands.add_parser("denoise", help="denoise a cell image into a PNG")
    denoise.add_argument("image", type=Path)
    denoise.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    denoise.add_argument("--original-size", action="store_true", help="answer at the upload's size")

    similar = commands.add_parser("similar", help="find the k most similar gallery cells")
    similar.add_argument("image", type=Path)
    similar.add_argument("-k", type=_positive_int, default=5, help="number of results (default 5)")
    return parser


def run(arguments: argparse.Namespace, client: CellsignClient) -> None:
    """Carry out one parsed command; errors propagate to :func:`main`."""
    if arguments.command == "classify":
        result = client.classify(arguments.images)
        if arguments.json:
            print(json.dumps(result, indent=2))
        else:
            _print_classification(result)
    elif arguments.command == "denoise":
        png = client.denoise(arguments.image, size_original=arguments.original_size)
        arguments.output.write_bytes(png)
        print(f"wrote {arguments.output} ({len(png)} bytes)")
    elif arguments.command == "similar":
        result = client.similar(arguments.image, k=arguments.k)
        if arguments.json:
            print(json.dumps(result, indent=2))
        else:
            _print_neighbours(result)


def main(argv: Sequence[str] | None = None, http_client: httpx.Client | None = None) -> int:
    """Entry point of ``cellsign`` / ``python -m app.client``; returns the exit status."""
    arguments = build_parser().parse_args(argv)
    try:
        with CellsignClient(
            arguments.url, arguments.api_key, http_client=http_client, raw=arguments.raw
        ) as client:
            run(arguments, client)
    except (CellsignError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {error.strerror or error}: {error.filename}", file=sys.stderr)
        return 1
    except httpx.TransportError as error:
        print(f"error: cannot reach {arguments.url}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
