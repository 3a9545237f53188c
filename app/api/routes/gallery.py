"""GET /gallery/{id}.png: one gallery cell, looked up by integer id (never by path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response

from app.api.deps import ModelsDep, ServiceDep
from app.api.schemas import ErrorResponse
from app.core.errors import ModelUnavailableError
from app.core.registry import INDEX

router = APIRouter(tags=["gallery"])


@router.get(
    "/gallery/{item_id}.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The cell as PNG."},
        404: {"model": ErrorResponse, "description": "No gallery cell has this id."},
    },
)
async def gallery_image(
    item_id: Annotated[int, Path(description="An `id` from a /similar result.")],
    service: ServiceDep,
    models: ModelsDep,
) -> Response:
    if models.index is None:
        raise ModelUnavailableError(service.registry.missing_reason(INDEX))
    png = models.index.image_png(item_id)
    if png is None:
        raise HTTPException(404, detail=f"no gallery cell with id {item_id}")
    return Response(png, media_type="image/png")
