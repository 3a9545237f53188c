"""POST /similar: the gallery cells whose encoder codes are nearest to the upload's code."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.api.deps import INDEX_VERSION_HEADER, MODEL_VERSION_HEADER
from app.api.inference import InferenceDep, inference_openapi, run_model
from app.api.ood import assess
from app.api.routes import UPLOAD_ERRORS
from app.api.schemas import IndexRef, ModelRef, Neighbour, SimilarResponse
from app.api.uploads import request_uploads, require_one_file
from app.core.registry import INDEX
from contract.signatures import ENCODE

router = APIRouter(tags=["inference"])


@router.post(
    "/similar",
    response_model=SimilarResponse,
    responses=UPLOAD_ERRORS,
    dependencies=[Depends(require_one_file)],
    openapi_extra=inference_openapi("A form with one `file` part, or the image as the raw body."),
)
async def similar(
    request: Request,
    response: Response,
    inference: InferenceDep,
    file: Annotated[UploadFile | None, File(description="One image of a cell.")] = None,
    k: Annotated[
        int | None,
        Query(ge=1, description="How many neighbours: 1..MAX_K (default DEFAULT_K)."),
    ] = None,
) -> SimilarResponse:
    """Encode the upload and search the FAISS gallery index.

    `version` and `label` pin a malaria_index version; each index version is searched with
    the autoencoder version it was built with (`X-Model-Version`; `X-Index-Version` is the
    index's own version). ``in_distribution`` says whether the upload looks like a
    blood-smear cell.
    """
    service, models = inference.service, inference.models
    settings = service.settings
    if k is None:
        k = settings.default_k
    if k > settings.max_k:
        raise HTTPException(422, detail=f"k must be between 1 and {settings.max_k}, got {k}")
    index = inference.model(INDEX)
    encoder = models.encoders[index.version]
    response.headers[MODEL_VERSION_HEADER] = str(encoder.version)
    response.headers[INDEX_VERSION_HEADER] = str(index.version)
    # A gallery id means a cell of this index version; link to that version unless default.
    query = "" if index is models.index else f"?version={index.version}"
    uploads = await request_uploads(request, None if file is None else [file], settings)
    (item,), rows = await run_model(inference, "encode", encoder, ENCODE, uploads)
    (code,), (verdict,) = assess(service, encoder, [item.filename], rows)
    neighbours = await run_in_threadpool(index.search, code, k)
    return SimilarResponse(
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
