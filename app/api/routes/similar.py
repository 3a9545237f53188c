"""POST /similar: the gallery cells whose encoder codes are nearest to the upload's code."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import INDEX_VERSION_HEADER, MODEL_VERSION_HEADER
from app.api.errors import invalid_parameter
from app.api.inference import (
    InferenceRoute,
    inference_context,
    inference_openapi,
    json_response,
    run_model,
)
from app.api.numbers import whole_number
from app.api.ood import assess
from app.api.routes import UPLOAD_ERRORS
from app.api.schemas import IndexRef, ModelRef, Neighbour, SimilarResponse
from app.api.uploads import request_uploads
from app.core.registry import INDEX
from app.settings import Settings
from contract.signatures import ENCODE

router = APIRouter(tags=["inference"], route_class=InferenceRoute)

K_PARAMETER = {
    "name": "k",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "How many neighbours: 1..MAX_K (default DEFAULT_K).",
}


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


@router.post(
    "/similar",
    response_model=SimilarResponse,
    responses=UPLOAD_ERRORS,
    openapi_extra=inference_openapi(
        "A form with one `file` part, or the image as the raw body.",
        several=False,
        parameters=(K_PARAMETER,),
    ),
)
async def similar(request: Request) -> Response:
    """Encode the upload and search the FAISS gallery index.

    `version` and `label` pin a malaria_index version; each index version is searched with
    the autoencoder version it was built with (`X-Model-Version`; `X-Index-Version` is the
    index's own version). ``in_distribution`` says whether the upload looks like a
    blood-smear cell.
    """
    inference = await inference_context(request)
    service, models = inference.service, inference.models
    settings = service.settings
    k = neighbours_asked(request, settings)
    index = inference.model(INDEX)
    encoder = models.encoders[index.version]
    # A gallery id means a cell of this index version; link to that version unless default.
    query = "" if index is models.index else f"?version={index.version}"
    uploads = await request_uploads(request, settings, several=False)
    (item,), rows = await run_model(inference, "encode", encoder, ENCODE, uploads)
    (code,), (verdict,) = assess(service, encoder, [item.filename], rows)
    neighbours = await run_in_threadpool(index.search, code, k)
    body = SimilarResponse(
        results=[
            Neighbour(
                id=n.id, label=n.label, distance=n.distance, image_url=f"/gallery/{n.id}.png{query}"
            )
            for n in neighbours
        ],
        index=IndexRef(size=index.size, type=index.index_type, version=index.version),
        model=ModelRef(name=encoder.name, version=encoder.version),
        ood_score=verdict.ood_score,
        in_distribution=verdict.in_distribution,
    )
    headers = {MODEL_VERSION_HEADER: str(encoder.version), INDEX_VERSION_HEADER: str(index.version)}
    return json_response(body, headers)
