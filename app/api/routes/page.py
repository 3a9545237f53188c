"""GET /: the web page (files in app/static/, written separately)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from app.api.route_needs import OPEN, needs

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
@needs(OPEN)
async def index_page() -> FileResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise HTTPException(404, detail="the web page is not installed (app/static/index.html)")
    return FileResponse(page, media_type="text/html")
