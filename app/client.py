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
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from contract.arguments import positive_int

DEFAULT_URL = "http://127.0.0.1:8000"
API_KEY_HEADER = "X-API-Key"
# The server's limits on what a user says about a gallery cell (app/gallery/store.py); the
# client checks them too so a typo fails before the images are uploaded.
MAX_LABEL_CHARS = 64
MAX_NOTE_CHARS = 256


class CellsignError(Exception):
    """The server refused a request; ``str(error)`` is its ``detail`` in one line."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class CellsignClient:
    """Calls ``/classify``, ``/denoise``, ``/similar`` and ``/gallery`` on one server.

    Pass ``http_client`` to reuse a configured ``httpx.Client`` (a custom transport, or
    FastAPI's ``TestClient`` in tests); otherwise the client owns one and closes it.
    With ``raw=True`` the image is sent as the request body instead of as a multipart part:
    cheaper for the server, one image per request. The API key is sent with every request:
    the server asks for it on gallery writes whenever it has one.
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

    def similar(self, path: str | Path, k: int = 5, label: str | None = None) -> dict[str, Any]:
        """Return the ``k`` gallery cells whose encoder codes are nearest to the image's,
        among the cells labelled ``label`` only when given."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        params: dict[str, Any] = {"k": k}
        if label is not None:
            params["label"] = check_label(label)
        response = self._post("/similar", [Path(path)], params=params)
        return response.json()

    def gallery_image(self, image_url: str) -> bytes:
        """Fetch a gallery cell's PNG from an ``image_url`` returned by :meth:`similar`."""
        response = self._http.get(self._url(image_url), headers=self._headers)
        _raise_for_error(response)
        return response.content

    def gallery_add(
        self, paths: Sequence[str | Path], label: str, note: str | None = None
    ) -> dict[str, Any]:
        """Add the images to the gallery under ``label`` in one request (one transaction);
        the answer's ``items`` follow the order of ``paths``, and ``created_now`` is false for
        a cell the gallery already held (it keeps its id, label and note). With ``raw`` the
        one image is the body and the label and note go in the query."""
        if not paths:
            raise ValueError("gallery add needs at least one image path")
        if self.raw and len(paths) > 1:
            raise ValueError("a raw body carries one image: add them one at a time")
        fields = {"label": check_label(label)}
        if note is not None:
            fields["note"] = check_note(note)
        files = [Path(path) for path in paths]
        if self.raw:
            response = self._post("/gallery", files, params=fields)
        else:
            response = self._post("/gallery", files, form=fields)
        return response.json()

    def gallery_remove(self, item_id: int) -> None:
        """Delete one gallery cell; an unknown id raises :class:`CellsignError` (HTTP 404)."""
        response = self._http.delete(
            self._url(f"/gallery/{_item_id(item_id)}"), headers=self._headers
        )
        _raise_for_error(response)

    def gallery_item(self, item_id: int) -> dict[str, Any]:
        """One gallery cell: id, label, note, created (Unix seconds), source, image_url."""
        response = self._http.get(self._url(f"/gallery/{_item_id(item_id)}"), headers=self._headers)
        _raise_for_error(response)
        return response.json()

    def gallery_list(
        self, label: str | None = None, limit: int | None = None, after: int | None = None
    ) -> dict[str, Any]:
        """One page of the gallery in ascending id order: ``{"items": [...], "next": id}``;
        pass ``next`` as ``after`` for the following page (``None`` after the last)."""
        params: dict[str, Any] = {}
        if label is not None:
            params["label"] = check_label(label)
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be at least 1, got {limit}")
            params["limit"] = limit
        if after is not None:
            params["after"] = _item_id(after)
        response = self._http.get(self._url("/gallery"), params=params, headers=self._headers)
        _raise_for_error(response)
        return response.json()

    def gallery_items(
        self, label: str | None = None, limit: int | None = None, after: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item from ``after`` on, following the cursor one page (``limit`` items) at a
        time. A cursor that does not move forwards raises instead of asking forever."""
        while True:
            page = self.gallery_list(label=label, limit=limit, after=after)
            yield from page["items"]
            cursor = page.get("next")
            if cursor is None:
                return
            if not isinstance(cursor, int) or (after is not None and cursor <= after):
                raise CellsignError(f"the server's cursor did not move forwards: {cursor!r}")
            after = cursor

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
        form: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST the files as multipart parts named ``file``, with the ``form`` fields beside
        them (or the one file as the raw body); read them first so a missing file fails
        before any network traffic."""
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
            response = self._http.post(
                self._url(path), files=parts, data=form, params=params, headers=headers
            )
        _raise_for_error(response)
        return response


def check_label(label: str) -> str:
    """The label as given, once it has 1 to MAX_LABEL_CHARS printable characters (the
    server's rule, checked here so a typo fails before any upload)."""
    if not 1 <= len(label) <= MAX_LABEL_CHARS or not label.isprintable():
        raise ValueError(
            f"a label has 1 to {MAX_LABEL_CHARS} printable characters (no control characters "
            f"or line breaks), got {len(label)} characters"
        )
    return label


def check_note(note: str) -> str:
    """The note as given, once it has at most MAX_NOTE_CHARS printable characters."""
    if len(note) > MAX_NOTE_CHARS or not note.isprintable():
        raise ValueError(
            f"a note has at most {MAX_NOTE_CHARS} printable characters (no control characters "
            f"or line breaks), got {len(note)} characters"
        )
    return note


def _item_id(item_id: int) -> int:
    """A gallery id goes into the URL path: only a whole number >= 0 may."""
    if isinstance(item_id, bool) or not isinstance(item_id, int) or item_id < 0:
        raise ValueError(f"a gallery id is a whole number of at least 0, got {item_id!r}")
    return item_id


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


def _print_added(paths: Sequence[Path], answer: dict[str, Any]) -> None:
    """One line per upload: its new id, or the id of the cell the gallery already held."""
    items = answer["items"]
    names = [f"{path}: " for path in paths] if len(items) == len(paths) else [""] * len(items)
    for name, item in zip(names, items, strict=True):
        what = "added as" if item.get("created_now", True) else "already in the gallery as"
        print(f"{name}{what} id {item['id']} (label {item['label']})")


def _item_line(item: dict[str, Any]) -> str:
    """id, label, source, created (UTC) and note, tab-separated; the note on one line."""
    created = datetime.fromtimestamp(item["created"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    columns = [str(item["id"]), item["label"], item["source"], created]
    return "\t".join([*columns, _one_line(item.get("note") or "")])


def _list_gallery(arguments: argparse.Namespace, client: CellsignClient) -> None:
    """``gallery ls``: one page, or with ``--all`` every page; a page with more after it says
    how to ask for the next one (on stderr, so stdout holds only items)."""
    label, limit, after = arguments.label, arguments.limit, arguments.after
    if arguments.all:
        items = client.gallery_items(label=label, limit=limit, after=after)
        if arguments.json:
            print(json.dumps({"items": list(items), "next": None}, indent=2))
        else:
            for item in items:
                print(_item_line(item))
        return
    page = client.gallery_list(label=label, limit=limit, after=after)
    if arguments.json:
        print(json.dumps(page, indent=2))
        return
    for item in page["items"]:
        print(_item_line(item))
    if page.get("next") is not None:
        print(f"more: add --after {page['next']} for the next page, or --all", file=sys.stderr)


def _gallery_id(text: str) -> int:
    """argparse type: a gallery id is ASCII digits only (it goes into the URL path)."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"a gallery id is a whole number, got {text!r}")
    return int(text)


def _label(text: str) -> str:
    try:
        return check_label(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _note(text: str) -> str:
    try:
        return check_note(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellsign",
        description="Call a cellsign server: classify, denoise, similar, gallery.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("CELLSIGN_URL", DEFAULT_URL),
        help="server address (default: $CELLSIGN_URL or %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("CELLSIGN_API_KEY"),
        help="sent as X-API-Key; gallery add and rm need it when the server has one "
        "(default: $CELLSIGN_API_KEY)",
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
    similar.add_argument("-k", type=positive_int, default=5, help="number of results (default 5)")
    similar.add_argument("--label", type=_label, help="search among the cells of this label only")

    gallery = commands.add_parser("gallery", help="add, remove and list gallery cells")
    actions = gallery.add_subparsers(dest="gallery_command", required=True, metavar="{add,rm,ls}")
    add = actions.add_parser("add", help="add cell images under a label (needs the API key)")
    add.add_argument("--label", type=_label, required=True, help="1 to 64 printable characters")
    add.add_argument("--note", type=_note, help="a short note (at most 256 characters)")
    add.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    remove = actions.add_parser("rm", help="remove cells by id (needs the API key)")
    remove.add_argument("ids", nargs="+", type=_gallery_id, metavar="ID")
    listing = actions.add_parser("ls", help="list cells in id order, one page at a time")
    listing.add_argument("--label", type=_label, help="only the cells of this label")
    listing.add_argument("--limit", type=positive_int, help="items per page (server default)")
    listing.add_argument("--after", type=_gallery_id, metavar="ID", help="start after this id")
    listing.add_argument("--all", action="store_true", help="follow the cursor to the end")
    return parser


def run(arguments: argparse.Namespace, client: CellsignClient) -> None:
    """Carry out one parsed command; errors propagate to :func:`main`."""
    command = arguments.command
    if command == "gallery":
        command = f"gallery {arguments.gallery_command}"
    if command == "classify":
        result = client.classify(arguments.images)
        if arguments.json:
            print(json.dumps(result, indent=2))
        else:
            _print_classification(result)
    elif command == "denoise":
        png = client.denoise(arguments.image, size_original=arguments.original_size)
        arguments.output.write_bytes(png)
        print(f"wrote {arguments.output} ({len(png)} bytes)")
    elif command == "similar":
        result = client.similar(arguments.image, k=arguments.k, label=arguments.label)
        if arguments.json:
            print(json.dumps(result, indent=2))
        else:
            _print_neighbours(result)
    elif command == "gallery add":
        result = client.gallery_add(arguments.images, arguments.label, note=arguments.note)
        if arguments.json:
            print(json.dumps(result, indent=2))
        else:
            _print_added(arguments.images, result)
    elif command == "gallery rm":
        # One at a time, stopping at the first refusal: the lines before it say what went.
        for item_id in arguments.ids:
            client.gallery_remove(item_id)
            print(f"removed {item_id}")
    elif command == "gallery ls":
        _list_gallery(arguments, client)


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
