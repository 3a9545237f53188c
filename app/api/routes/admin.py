"""POST /admin/reload: look for new versions now instead of waiting for the next poll."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.api.schemas import ReloadResponse

router = APIRouter(tags=["operations"])


@router.post("/admin/reload", response_model=ReloadResponse)
async def reload_models(service: ServiceDep) -> ReloadResponse:
    """Load and validate any newer version, swap it in, and report what changed.

    A broken version is refused (see `refused` in /models) and the old one keeps serving.
    """
    changes = await to_thread.run_sync(service.registry.reload)
    return ReloadResponse(changes=changes, missing=service.registry.missing())
