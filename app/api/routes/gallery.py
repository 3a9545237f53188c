"""The living gallery over HTTP (docs/gallery.md): list, read, add and delete cells.

Reads (``router``) are guarded like /similar; writes (``writes``: POST and DELETE) like
/admin, behind the API key whenever one is set. Ids are whole numbers looked up in the
store, never paths. Every answer names the active code space's encoder version in
``X-Index-Version``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from app.api.deps import INDEX_VERSION_HEADER, MODEL_VERSION_HEADER, ServiceDep, ServiceState
from app.api.errors import invalid_parameter
from app.api.inference import check_timeout_header
from app.api.numbers import MAX_DIGITS, whole_number
from app.api.overload.admission import request_timeout
from app.api.route_needs import OPERATOR, Images, RouteNeeds, needs
from app.api.routes import UPLOAD_ERRORS
from app.api.schemas import (
    AddedItem,
    ErrorResponse,
    GalleryAddResponse,
    GalleryItemInfo,
    GalleryPage,
)
from app.api.uploads import (
    RAW_IMAGE_TYPES,
    Upload,
    body_media_type,
    check_file_count,
    decode_limits,
    decode_uploads,
    request_uploads,
    upload_openapi,
)
from app.core.deadline import Deadline
from app.core.errors import BadImageError
from app.core.imaging import DecodeAdmission, decode_for_model
from app.core.runtime import LoadedModel
from app.gallery.images import GALLERY_SIDE, StoredImage, stored_image
from app.gallery.service import (
    ENCODE_CHUNK,
    GalleryInputError,
    GalleryService,
    check_label,
    check_note,
    codes_signature,
)
from app.gallery.store import MAX_LABEL_CHARS, MAX_NOTE_CHARS, GalleryItem
from app.settings import Settings

router = APIRouter(tags=["gallery"])
writes = APIRouter(tags=["gallery"])
# POST /gallery: up to GALLERY_MAX_FILES images, encoded by the encode batcher; behind the
# API key whenever one is set, like /admin.
ADD = RouteNeeds(
    accepts=Images(lambda settings: settings.gallery_max_files),
    batchers=("encode",),
    key_scope="admin",
    operator=True,
)
LARGEST = 10**MAX_DIGITS - 1

_NOT_FOUND = {"model": ErrorResponse, "description": "No gallery cell has this id."}
_UNAVAILABLE = {
    "model": ErrorResponse,
    "description": "The gallery store is unreachable, or the gallery holds no codes yet.",
}


def _whole_number_from(minimum: int) -> BeforeValidator:
    """Reads the raw text with ``whole_number`` before pydantic sees it: pydantic's own int
    parsing takes any length (and spaces, ``+``, ``_`` and ``12.0``), and a path id of
    thousands of digits then failed later, when the 404 message formatted it."""
    message = f"must be a whole number of at least {minimum}, in at most {MAX_DIGITS} ASCII digits"

    def parse(text: Any) -> int:
        number = whole_number(text, minimum) if isinstance(text, str) else None
        if number is None:
            raise PydanticCustomError("whole_number", message)
        return number

    return BeforeValidator(parse)


def _gallery_label(text: Any) -> str:
    try:
        return check_label(text)
    except GalleryInputError as error:
        raise PydanticCustomError("gallery_label", error.detail) from None


GalleryId = Annotated[
    int,
    _whole_number_from(0),
    Path(ge=0, le=LARGEST, description="A gallery cell's `id` (from /similar or /gallery)."),
]
EncoderVersion = Annotated[
    int | None,
    _whole_number_from(1),
    Query(
        ge=1,
        le=LARGEST,
        description="Accepted when it names the encoder version of the codes searched now "
        "(`X-Index-Version`); any other is a 404.",
    ),
]
LabelFilter = Annotated[
    str | None,
    BeforeValidator(_gallery_label),
    Query(
        max_length=MAX_LABEL_CHARS, description="Only the cells of this label.", examples=["mine"]
    ),
]
Cursor = Annotated[
    int | None,
    _whole_number_from(0),
    Query(ge=0, le=LARGEST, description="Start after this id: the `next` of the page before."),
]
PageSize = Annotated[
    int | None,
    _whole_number_from(1),
    Query(ge=1, le=LARGEST, description="Items per page: 1..GALLERY_MAX_PAGE_SIZE."),
]


def gallery_of(service: ServiceState) -> GalleryService:
    """The worker's gallery (503 in the rare app built without one, e.g. a failed start)."""
    if service.gallery is None:
        raise HTTPException(503, detail="the gallery is not running in this worker")
    return service.gallery


def index_headers(gallery: GalleryService) -> dict[str, str]:
    """``X-Index-Version``: the encoder version of the codes searched now (none while the
    gallery holds no codes)."""
    space = gallery.active_space
    return {} if space is None else {INDEX_VERSION_HEADER: str(space.encoder_version)}


def check_version(gallery: GalleryService, version: int | None) -> None:
    """``?version=`` pins nothing: it is accepted when it names the active code space's
    encoder version, so that an old client's link keeps working, and is a 404 otherwise."""
    if version is None:
        return
    space = gallery.active_space
    if space is None or space.encoder_version != version:
        serving = "none yet" if space is None else str(space.encoder_version)
        raise HTTPException(
            404,
            detail=f"the gallery's codes are of malaria_autoencoder version {serving}, not "
            f"{version}; gallery answers name theirs in {INDEX_VERSION_HEADER}",
        )


def item_info(item: GalleryItem) -> GalleryItemInfo:
    """The stored item's fields, as they are, and the URL its image is served at.

    ``vars`` rather than ``dataclasses.asdict``: a page of up to 1,000 items is built on the
    event loop, and asdict's per-field deep copies made that about five times slower."""
    return GalleryItemInfo(**vars(item), image_url=f"/gallery/{item.id}.png")


@router.get(
    "/gallery/{item_id}.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The cell as PNG."},
        404: _NOT_FOUND,
        503: _UNAVAILABLE,
    },
)
async def gallery_image(
    item_id: GalleryId, service: ServiceDep, version: EncoderVersion = None
) -> Response:
    """The cell as the gallery stores it: a PNG, at most 256 pixels on its longest side."""
    gallery = gallery_of(service)
    check_version(gallery, version)
    png = await run_in_threadpool(gallery.image, item_id)
    if png is None:
        raise HTTPException(404, detail=f"no gallery cell with id {item_id}")
    return Response(png, media_type="image/png", headers=index_headers(gallery))


@router.get(
    "/gallery/{item_id}",
    response_model=GalleryItemInfo,
    responses={404: _NOT_FOUND, 503: _UNAVAILABLE},
)
async def gallery_item(item_id: GalleryId, service: ServiceDep) -> JSONResponse:
    """One cell: its label, note, when it was added (Unix seconds) and whether it came with
    the offline index (`offline`) or was added since (`added`)."""
    gallery = gallery_of(service)
    item = await run_in_threadpool(gallery.get, item_id)
    if item is None:
        raise HTTPException(404, detail=f"no gallery cell with id {item_id}")
    return JSONResponse(item_info(item).model_dump(), headers=index_headers(gallery))


@router.get("/gallery", response_model=GalleryPage, responses={503: _UNAVAILABLE})
async def gallery_items(
    service: ServiceDep,
    label: LabelFilter = None,
    limit: PageSize = None,
    after: Cursor = None,
) -> JSONResponse:
    """A page of cells in ascending id order; `next` is the `after` of the following page
    (null after the last one)."""
    gallery = gallery_of(service)
    settings = service.settings
    if limit is None:
        limit = settings.gallery_page_size
    elif limit > settings.gallery_max_page_size:
        message = f"must be a whole number from 1 to {settings.gallery_max_page_size}"
        raise invalid_parameter("query", "limit", str(limit), message)
    found = await run_in_threadpool(gallery.items, label, limit + 1, after)
    page = found[:limit]
    following = page[-1].id if len(found) > limit else None
    body = GalleryPage(items=[item_info(item) for item in page], next=following)
    return JSONResponse(body.model_dump(), headers=index_headers(gallery))


@writes.delete(
    "/gallery/{item_id}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted."}, 404: _NOT_FOUND, 503: _UNAVAILABLE},
)
@needs(OPERATOR)
async def delete_item(item_id: GalleryId, service: ServiceDep) -> Response:
    """Remove the cell, its image and its codes; from then on no answer names it."""
    gallery = gallery_of(service)
    if not await run_in_threadpool(gallery.delete, item_id):
        raise HTTPException(404, detail=f"no gallery cell with id {item_id}")
    return Response(status_code=204, headers=index_headers(gallery))


_ADD_BODY = {
    "required": True,
    "description": "A form with one or more `file` parts (at most GALLERY_MAX_FILES), a "
    f"`label` (1 to {MAX_LABEL_CHARS} printable characters) and an optional `note` (at most "
    f"{MAX_NOTE_CHARS}); or one image as the raw body with `?label=` (and `?note=`).",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "label": {"type": "string", "maxLength": MAX_LABEL_CHARS},
                    "note": {"type": "string", "maxLength": MAX_NOTE_CHARS},
                },
                "required": ["file", "label"],
            }
        },
        **{
            media_type: {"schema": {"type": "string", "format": "binary"}}
            for media_type in upload_openapi("", several=False)["content"]
            if media_type != "multipart/form-data"
        },
    },
}


@writes.post(
    "/gallery",
    status_code=201,
    response_model=GalleryAddResponse,
    responses={**UPLOAD_ERRORS, 503: _UNAVAILABLE},
    openapi_extra={"requestBody": _ADD_BODY},
)
@needs(ADD)
async def add_cells(request: Request, service: ServiceDep) -> JSONResponse:
    """Add cells under one label, in one transaction: every cell is stored with its image
    and its code, or none is. A cell the gallery already holds (the same pixels) is not
    added again: its item comes back with `created_now: false`, its label and note as they
    were. The cells are searchable at once in the worker that answered, and everywhere
    within a second."""
    try:
        return await _add_cells(request, service)
    finally:
        await request.close()  # the form's spooled files


async def _add_cells(request: Request, service: ServiceState) -> JSONResponse:
    gallery = gallery_of(service)
    settings = service.settings
    check_timeout_header(request)
    # The form is parsed with the gallery's own file limit (one past it, to name it).
    upload_settings = settings.model_copy(
        update={"max_files_per_request": settings.gallery_max_files}
    )
    files = await request_uploads(request, upload_settings, several=True)
    label, note = await _label_and_note(request)
    check_label(label)
    check_note(note)
    check_file_count(len(files), upload_settings)
    batcher = service.batchers["encode"]
    batcher.check_room(len(files))  # before any decoding is spent on them
    deadline = Deadline.after(request_timeout(request.headers, settings.request_timeout_s))
    gallery.note_query()
    cells = await service.decode_pool.run(
        functools.partial(_decode_cells, files, settings, deadline, service.decode_pool.large)
    )

    async def encode(encoder: LoadedModel[Any], batch: np.ndarray) -> np.ndarray:
        # ENCODE_CHUNK cells at a time, one after another (see ENCODE_CHUNK): submitted
        # together, the batcher would join them into one large call again.
        caller = encoder.caller(codes_signature(encoder))
        codes = [
            await batcher.submit(caller, batch[start : start + ENCODE_CHUNK], deadline)
            for start in range(0, len(batch), ENCODE_CHUNK)
        ]
        return np.concatenate(codes)

    space, added = await gallery.add(cells, label, note, encode)
    body = GalleryAddResponse(
        items=[
            AddedItem(**item_info(result.item).model_dump(), created_now=result.created)
            for result in added
        ]
    )
    version = str(space.encoder_version)
    headers = {INDEX_VERSION_HEADER: version, MODEL_VERSION_HEADER: version}
    return JSONResponse(body.model_dump(), status_code=201, headers=headers)


async def _label_and_note(request: Request) -> tuple[str, str]:
    """The form's `label` and `note` fields; for a raw image body, ``?label=`` and
    ``?note=``. Each at most once, as text (422 otherwise)."""
    values: dict[str, list[Any]]
    if body_media_type(request) in RAW_IMAGE_TYPES:
        values = {name: request.query_params.getlist(name) for name in ("label", "note")}
        where = "query"
    else:
        form = await request.form()  # already parsed by request_uploads: its cached copy
        values = {name: form.getlist(name) for name in ("label", "note")}
        where = "body"
    fields = {}
    for name, given in values.items():
        if len(given) > 1:
            raise invalid_parameter(where, name, None, "give it once")
        value = given[0] if given else None
        if value is not None and not isinstance(value, str):
            raise invalid_parameter(where, name, None, "must be a text field, not a file")
        fields[name] = value
    if fields["label"] is None:
        raise invalid_parameter(where, "label", None, "a label for the cells is required")
    return fields["label"], fields["note"] or ""


def _decode_cells(
    files: Sequence[Upload],
    settings: Settings,
    deadline: Deadline,
    large: threading.BoundedSemaphore,
) -> list[StoredImage]:
    """Every upload through the input gate (``decode_for_model``, at most ``GALLERY_SIDE``
    wanted, so a large JPEG is decoded at reduced scale), then as the gallery stores it;
    on a decoding thread, within the request's pixel budget and the large-decode slots as
    on every upload endpoint (``app.api.uploads.decode_uploads``)."""
    limits = decode_limits(settings)

    def decode(data: bytes, filename: str, admit: DecodeAdmission) -> StoredImage:
        decoded = decode_for_model(data, filename, limits, (GALLERY_SIDE, GALLERY_SIDE), admit)
        try:
            return stored_image(decoded.image)
        except (OSError, ValueError) as error:
            raise BadImageError(f"{filename}: cannot be stored: {error}") from error

    return decode_uploads(files, settings, deadline, large, decode)
