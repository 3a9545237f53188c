"""GET /gallery/{id}.png: one gallery cell, looked up by integer id (never by path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from app.api.deps import INDEX_VERSION_HEADER, ModelsDep, Pin, ServiceDep, choose
from app.api.schemas import ErrorResponse
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
    version: Annotated[
        int | None, Query(ge=1, description="The malaria_index version (default: the default).")
    ] = None,
) -> Response:
    index = choose(service, models, INDEX, Pin(version=version))
    png = index.image_png(item_id)
    if png is None:
        raise HTTPException(404, detail=f"no gallery cell with id {item_id}")
    return Response(png, media_type="image/png", headers={INDEX_VERSION_HEADER: str(index.version)})
