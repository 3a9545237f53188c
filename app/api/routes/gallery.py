"""GET /gallery/{id}.png: one gallery cell, looked up by integer id (never by path)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from app.api.deps import INDEX_VERSION_HEADER, ModelsDep, Pin, ServiceDep, choose
from app.api.numbers import MAX_DIGITS, whole_number
from app.api.schemas import ErrorResponse
from app.core.registry import INDEX

router = APIRouter(tags=["gallery"])
LARGEST = 10**MAX_DIGITS - 1


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


GalleryId = Annotated[
    int,
    _whole_number_from(0),
    Path(ge=0, le=LARGEST, description="An `id` from a /similar result."),
]
IndexVersion = Annotated[
    int | None,
    _whole_number_from(1),
    Query(ge=1, le=LARGEST, description="The malaria_index version (default: the default)."),
]


@router.get(
    "/gallery/{item_id}.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The cell as PNG."},
        404: {"model": ErrorResponse, "description": "No gallery cell has this id."},
    },
)
async def gallery_image(
    item_id: GalleryId, service: ServiceDep, models: ModelsDep, version: IndexVersion = None
) -> Response:
    index = choose(service, models, INDEX, Pin(version=version))
    png = index.image_png(item_id)
    if png is None:
        raise HTTPException(404, detail=f"no gallery cell with id {item_id}")
    return Response(png, media_type="image/png", headers={INDEX_VERSION_HEADER: str(index.version)})
