"""Admin: reload now, label versions (stable/canary), roll back. Behind the API key.

Label changes and rollbacks are written to ``models/<name>/labels.json`` (so they survive a
restart and a poll never undoes them); see docs/versions.md.
"""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Path

from app.api.deps import ServiceDep
from app.api.schemas import (
    ErrorResponse,
    LabelRequest,
    LabelsResponse,
    ModelVersionsInfo,
    ReloadResponse,
    RollbackResponse,
)
from app.core.labels import LABEL_PATTERN
from app.core.registry import ModelRegistry

router = APIRouter(tags=["operations"])

_NOT_FOUND = {
    "model": ErrorResponse,
    "description": "Unknown model or label, or a version that cannot be loaded.",
}
_CONFLICT = {"model": ErrorResponse, "description": "The change does not fit the current state."}

ModelName = Annotated[str, Path(description="signs_classifier, malaria_autoencoder, ...")]
LabelName = Annotated[
    str, Path(pattern=LABEL_PATTERN, description="`stable`, `canary` or any other alias.")
]


@router.post("/admin/reload", response_model=ReloadResponse)
async def reload_models(service: ServiceDep) -> ReloadResponse:
    """Load and validate any newer version, swap it in, and report what changed.

    A broken version is refused (see `refused` in /models) and the old one keeps serving.
    The answer is this worker process's; the server's other workers follow within a second.
    """
    changes = await to_thread.run_sync(service.registry.reload)
    if service.reload_signal is not None:
        await to_thread.run_sync(service.reload_signal.send)
    return ReloadResponse(changes=changes, missing=service.registry.missing())


@router.put(
    "/admin/models/{name}/labels/{label}",
    response_model=LabelsResponse,
    responses={
        400: {"model": ErrorResponse, "description": "The body is not JSON."},
        404: _NOT_FOUND,
        409: _CONFLICT,
    },
)
async def set_label(
    name: ModelName, label: LabelName, body: LabelRequest, service: ServiceDep
) -> LabelsResponse:
    """Point a label at a version, loading it if it is on disk; `stable` becomes the default
    version, `canary` takes `canary_share` of the requests that pin nothing.

    404 when the version cannot be loaded; 409 for `canary_share` with another label.
    """
    persisted = await to_thread.run_sync(
        service.registry.set_label, name, label, body.version, body.canary_share
    )
    return _labels_response(service.registry, name, persisted)


@router.delete(
    "/admin/models/{name}/labels/{label}",
    response_model=LabelsResponse,
    responses={404: _NOT_FOUND},
)
async def remove_label(name: ModelName, label: LabelName, service: ServiceDep) -> LabelsResponse:
    """Drop a label. Removing `stable` after a rollback serves the newest version again."""
    persisted = await to_thread.run_sync(service.registry.remove_label, name, label)
    return _labels_response(service.registry, name, persisted)


@router.post(
    "/admin/rollback/{name}",
    response_model=RollbackResponse,
    responses={404: _NOT_FOUND, 409: _CONFLICT},
)
async def rollback(name: ModelName, service: ServiceDep) -> RollbackResponse:
    """Serve the loaded version just below the current default, and stay there: `stable`
    is set to it and any canary is dropped. 409 when no older version is loaded."""
    before, after, persisted = await to_thread.run_sync(service.registry.rollback, name)
    labels = _labels_response(service.registry, name, persisted)
    return RollbackResponse(**labels.model_dump(), rolled_back_from=before, serving=after)


def _labels_response(registry: ModelRegistry, name: str, persisted: bool) -> LabelsResponse:
    versions = registry.describe()["versions"][name]
    return LabelsResponse(name=name, versions=ModelVersionsInfo(**versions), persisted=persisted)
