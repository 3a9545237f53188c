"""Liveness and readiness probes: never behind the API key."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ServiceDep, ServiceState
from app.api.route_needs import OPEN, needs
from app.api.schemas import GalleryInfo, Health, NotReady, Ready

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
@needs(OPEN)
async def healthz() -> Health:
    """The process is up and answering (even when no model could be loaded)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    responses={503: {"model": NotReady, "description": "Not ready; `detail` says why."}},
)
@needs(OPEN)
async def readyz(service: ServiceDep) -> Ready | JSONResponse:
    """200 once both models, the index and the gallery serve; 503 naming each missing
    piece otherwise.

    `components` says per model whether it is ready: a model that is not gives its own
    endpoints 503 while the others keep serving. `training` is what a training run beside
    the server is doing (`scripts/serve.sh` starts one when models are missing). `gallery`
    is what /similar searches, with the progress of a background re-encoding after a new
    autoencoder version (the gallery stays ready meanwhile: it searches the previous codes).
    """
    components = service.registry.readiness()
    status = service.registry.training_status()
    training = status if status and status["state"] != "done" else None
    gallery = gallery_info(service)
    missing = {name: state["reason"] for name, state in components.items() if not state["ready"]}
    if gallery is not None and not gallery.ready:
        missing["gallery"] = gallery.reason
    if missing:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in missing.items())
        body = {
            "detail": f"not ready: {reasons}",
            "components": components,
            "training": training,
            "gallery": gallery,
        }
        return JSONResponse(NotReady.model_validate(body).model_dump(), status_code=503)
    return Ready.model_validate(
        {
            "status": "ready",
            "models": {name: state["version"] for name, state in components.items()},
            "components": components,
            "training": training,
            "gallery": gallery,
        }
    )


def gallery_info(service: ServiceState) -> GalleryInfo | None:
    """The worker's last view of its gallery (no store call: probes stay cheap)."""
    if service.gallery is None:
        return None
    return GalleryInfo.model_validate(asdict(service.gallery.state))
