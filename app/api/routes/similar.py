"""POST /similar: the gallery cells whose encoder codes are nearest to the upload's code."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from app.api.deps import ModelsDep, ServiceDep
from app.api.ood import assess
from app.api.routes import UPLOAD_ERRORS
from app.api.schemas import IndexRef, ModelRef, Neighbour, SimilarResponse
from app.api.uploads import read_uploads, require_one_file
from app.core.errors import ModelUnavailableError
from app.core.registry import INDEX

router = APIRouter(tags=["inference"])


@router.post(
    "/similar",
    response_model=SimilarResponse,
    responses=UPLOAD_ERRORS,
    dependencies=[Depends(require_one_file)],
)
async def similar(
    file: Annotated[UploadFile, File(description="One image of a cell.")],
    service: ServiceDep,
    models: ModelsDep,
    k: Annotated[
        int | None,
        Query(ge=1, description="How many neighbours: 1..MAX_K (default DEFAULT_K)."),
    ] = None,
) -> SimilarResponse:
    """Encode the upload and search the FAISS gallery index; ``in_distribution`` says whether
    the upload looks like a blood-smear cell."""
    settings = service.settings
    if k is None:
        k = settings.default_k
    if k > settings.max_k:
        raise HTTPException(422, detail=f"k must be between 1 and {settings.max_k}, got {k}")
    index, encoder = models.index, models.encoder
    if index is None or encoder is None:
        raise ModelUnavailableError(service.registry.missing_reason(INDEX))
    (item,) = await read_uploads([file], settings, encoder.height, encoder.width)
    rows = await service.batchers["encode"].submit(
        encoder.inference_caller("encode"), item.pixels[None]
    )
    (code,), (verdict,) = assess(service, encoder, [item.filename], rows)
    neighbours = await run_in_threadpool(index.search, code, k)
    return SimilarResponse(
        results=[
            Neighbour(id=n.id, label=n.label, distance=n.distance, image_url=f"/gallery/{n.id}.png")
            for n in neighbours
        ],
        index=IndexRef(size=index.size, type=index.index_type, version=index.version),
        model=ModelRef(name=encoder.name, version=encoder.version),
        ood_score=verdict.ood_score,
        in_distribution=verdict.in_distribution,
    )
