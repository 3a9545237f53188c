"""Admin: reload now, label versions (stable/canary), roll back. Behind the API key.

Label changes and rollbacks are written to ``models/<name>/labels.json`` (so they survive a
restart and a poll never undoes them); see docs/versions.md. With several worker processes
the answer waits until every worker serves the change, and says how many do
(app/core/reload_signal.py, docs/workers.md).
"""

from __future__ import annotations

import time
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Path

from app.api.deps import ServiceDep, ServiceState
from app.api.json_body import JSONBodyRoute
from app.api.route_needs import OPERATOR, needs
from app.api.schemas import (
    ErrorResponse,
    LabelRequest,
    LabelsResponse,
    ModelVersionsInfo,
    ReloadResponse,
    RollbackResponse,
    WorkersInfo,
)
from app.core.labels import LABEL_PATTERN
from app.core.reload_signal import confirm_timeout_s, live_workers, wait_for_workers

router = APIRouter(tags=["operations"], route_class=JSONBodyRoute)

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
@needs(OPERATOR)
async def reload_models(service: ServiceDep) -> ReloadResponse:
    """Load and validate any newer version, swap it in, and report what changed.

    A broken version is refused (see `refused` in /models) and the old one keeps serving.
    `changes` are the answering worker's; `workers` says how many serve the result.
    """
    began = time.monotonic()
    changes = await to_thread.run_sync(service.registry.reload)
    workers = await in_every_worker(service, began, time.monotonic() - began)
    return ReloadResponse(changes=changes, missing=service.registry.missing(), workers=workers)


@router.put(
    "/admin/models/{name}/labels/{label}",
    response_model=LabelsResponse,
    responses={
        400: {"model": ErrorResponse, "description": "The body is not JSON."},
        404: _NOT_FOUND,
        409: _CONFLICT,
    },
)
@needs(OPERATOR)
async def set_label(
    name: ModelName, label: LabelName, body: LabelRequest, service: ServiceDep
) -> LabelsResponse:
    """Point a label at a version, loading it if it is on disk; `stable` becomes the default
    version, `canary` takes `canary_share` of the requests that pin nothing.

    404 when the version cannot be loaded; 409 for `canary_share` with another label.
    """
    began = time.monotonic()
    persisted = await to_thread.run_sync(
        service.registry.set_label, name, label, body.version, body.canary_share
    )
    return await _labels_response(service, name, persisted, began)


@router.delete(
    "/admin/models/{name}/labels/{label}",
    response_model=LabelsResponse,
    responses={404: _NOT_FOUND},
)
@needs(OPERATOR)
async def remove_label(name: ModelName, label: LabelName, service: ServiceDep) -> LabelsResponse:
    """Drop a label. Removing `stable` after a rollback serves the newest version again."""
    began = time.monotonic()
    persisted = await to_thread.run_sync(service.registry.remove_label, name, label)
    return await _labels_response(service, name, persisted, began)


@router.post(
    "/admin/rollback/{name}",
    response_model=RollbackResponse,
    responses={404: _NOT_FOUND, 409: _CONFLICT},
)
@needs(OPERATOR)
async def rollback(name: ModelName, service: ServiceDep) -> RollbackResponse:
    """Serve the loaded version just below the current default, and stay there: `stable`
    is set to it and any canary is dropped. 409 when no older version is loaded."""
    began = time.monotonic()
    before, after, persisted = await to_thread.run_sync(service.registry.rollback, name)
    labels = await _labels_response(service, name, persisted, began)
    return RollbackResponse(**labels.model_dump(), rolled_back_from=before, serving=after)


async def in_every_worker(service: ServiceState, since: float, took_s: float) -> WorkersInfo:
    """Have every worker process reload from disk, and wait (off the event loop, bounded)
    until each has a reload begun at ``since`` or later; ``took_s`` is what the change
    took here, which the others repeat. One process: this one, which has the change."""
    signal = service.reload_signal
    if signal is None:
        return WorkersInfo(confirmed=1, total=1)
    await to_thread.run_sync(signal.send)
    state = await to_thread.run_sync(
        wait_for_workers, signal.runtime_dir, since, confirm_timeout_s(took_s)
    )
    detail = None
    if state.pending:
        detail = (
            f"worker(s) {_pids(state.pending)} had not reloaded after {state.waited_s:.1f} s: "
            "each applies the change when the reload it is in ends"
        )
    elif state.failed:
        detail = f"worker(s) {_pids(state.failed)} failed to reload; see the server log"
    return WorkersInfo(
        confirmed=len(state.confirmed),
        total=state.total,
        pending=state.pending,
        failed=state.failed,
        waited_s=state.waited_s,
        detail=detail,
    )


async def _labels_response(
    service: ServiceState, name: str, persisted: bool, began: float
) -> LabelsResponse:
    """Made once the change is persisted: a change that could not be written holds in this
    worker alone (the others read labels from disk)."""
    took_s = time.monotonic() - began
    signal = service.reload_signal
    if persisted or signal is None:
        workers = await in_every_worker(service, time.monotonic(), took_s)
    else:
        total = len(await to_thread.run_sync(live_workers, signal.runtime_dir))
        alone = "labels.json could not be written: the change holds in this worker only"
        workers = WorkersInfo(confirmed=1, total=max(total, 1), detail=alone if total > 1 else None)
    versions = service.registry.describe()["versions"][name]
    return LabelsResponse(
        name=name, versions=ModelVersionsInfo(**versions), persisted=persisted, workers=workers
    )


def _pids(pids: list[int]) -> str:
    return ", ".join(map(str, pids))
