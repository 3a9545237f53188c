"""POST /similar: the gallery cells whose encoder codes are nearest to the upload's code."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.api.deps import INDEX_VERSION_HEADER, MODEL_VERSION_HEADER, Pin, service_of
from app.api.errors import invalid_parameter
from app.api.inference import (
    TIMEOUT_HEADER,
    VERSION_MESSAGE,
    InferenceContext,
    InferenceRoute,
    check_timeout_header,
    json_response,
    run_model,
)
from app.api.numbers import MAX_DIGITS, whole_number
from app.api.ood import assess
from app.api.route_needs import Images, needs, task_inference
from app.api.routes import UPLOAD_ERRORS
from app.api.routes.gallery import check_version, gallery_of
from app.api.schemas import IndexRef, ModelRef, Neighbour, SimilarResponse
from app.api.uploads import Upload, request_uploads, upload_openapi
from app.core.errors import ModelUnavailableError
from app.gallery.service import GalleryInputError, GalleryUnavailableError, check_label
from app.gallery.store import MAX_LABEL_CHARS
from app.settings import Settings
from contract.layout import INDEX
from contract.signatures import ENCODE

router = APIRouter(tags=["inference"], route_class=InferenceRoute)

# A search that found the code space switched under it encodes its query again, once.
SEARCH_ATTEMPTS = 2

PARAMETERS = [
    {
        "name": "k",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
        "description": "How many neighbours: 1..MAX_K (default DEFAULT_K).",
    },
    {
        "name": "label",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_CHARS},
        "description": "Only the gallery cells of this label (the k nearest among them).",
    },
    {
        "name": "version",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 10**MAX_DIGITS - 1},
        "description": "Accepted when it names the encoder version of the codes searched now "
        "(`X-Index-Version`); any other is a 404.",
    },
    {
        "name": TIMEOUT_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "number", "exclusiveMinimum": 0},
        "description": "Seconds this request may wait to reach its model before a 503 "
        "(at most, and by default, REQUEST_TIMEOUT_S), counted from its arrival.",
    },
]


def neighbours_asked(request: Request, settings: Settings) -> int:
    """``?k=``: DEFAULT_K when absent, 422 unless a whole number from 1 to MAX_K."""
    value = request.query_params.get("k")
    if value is None:
        return settings.default_k
    k = whole_number(value, 1, settings.max_k)
    if k is None:
        message = f"must be a whole number between 1 and {settings.max_k}"
        raise invalid_parameter("query", "k", value, message)
    return k


def label_asked(request: Request) -> str | None:
    """``?label=``: the gallery label to search among (422 when it could be no label)."""
    value = request.query_params.get("label")
    if value is None:
        return None
    try:
        return check_label(value)
    except GalleryInputError as error:
        raise invalid_parameter("query", "label", value[:MAX_LABEL_CHARS], error.detail) from None


def version_asked(request: Request) -> int | None:
    value = request.query_params.get("version")
    if value is None:
        return None
    version = whole_number(value, minimum=1)
    if version is None:
        raise invalid_parameter("query", "version", value[:MAX_DIGITS], VERSION_MESSAGE)
    return version


@router.post(
    "/similar",
    response_model=SimilarResponse,
    responses=UPLOAD_ERRORS,
    openapi_extra={
        "requestBody": upload_openapi(
            "A form with one `file` part, or the image as the raw body.", several=False
        ),
        "parameters": PARAMETERS,
    },
)
@needs(task_inference("encode", Images()))
async def similar(request: Request) -> Response:
    """Encode the upload and search the gallery: the `k` nearest cells, among those of
    `label` only when given (an exact filter, not the nearest k then filtered).

    The query is encoded by the encoder of the gallery's active codes: `X-Index-Version`
    names its version (and `X-Model-Version`, the same). After a new autoencoder version
    the gallery is re-encoded in the background, and searches switch to it at once when
    every cell has its new code. ``in_distribution`` says whether the upload looks like a
    blood-smear cell.
    """
    service = service_of(request)
    settings = service.settings
    gallery = gallery_of(service)
    version = version_asked(request)
    label = label_asked(request)
    check_timeout_header(request)
    k = neighbours_asked(request, settings)
    if gallery.active_space is None and service.registry.current.index is None:
        # Nothing to search until the offline index loads: say why it has not.
        raise ModelUnavailableError(service.registry.missing_reason(INDEX))
    check_version(gallery, version)
    deadline = request.state.budget.start()
    inference = InferenceContext(
        service, service.registry.current, Pin(), request.scope, request.receive, deadline
    )
    uploads = await request_uploads(request, settings, several=False)
    gallery.note_query()
    for _ in range(SEARCH_ATTEMPTS):
        space, encoder = gallery.searchable()
        (item,), rows = await run_model(inference, "encode", encoder, ENCODE, uploads)
        (code,), (verdict,) = assess(service, encoder, [item.filename], rows)
        neighbours = await run_in_threadpool(gallery.search, space, code, k, label)
        if neighbours is not None:
            break
        _rewind(uploads)
    else:
        raise GalleryUnavailableError("the gallery switched encoders during the search; retry")
    if version is not None and version != space.encoder_version:
        raise HTTPException(404, detail=f"version {version} stopped serving during the search")
    body = SimilarResponse(
        results=[
            Neighbour(id=n.id, label=n.label, distance=n.distance, image_url=f"/gallery/{n.id}.png")
            for n in neighbours
        ],
        index=IndexRef(
            size=gallery.state.items or 0, type=gallery.store_name, version=space.encoder_version
        ),
        model=ModelRef(name=encoder.name, version=encoder.version),
        ood_score=verdict.ood_score,
        in_distribution=verdict.in_distribution,
    )
    headers = {
        MODEL_VERSION_HEADER: str(encoder.version),
        INDEX_VERSION_HEADER: str(space.encoder_version),
    }
    return json_response(body, headers)


def _rewind(uploads: list[Upload]) -> None:
    """The form's file is read again for the next attempt."""
    for upload in uploads:
        if isinstance(upload, UploadFile):
            upload.file.seek(0)
