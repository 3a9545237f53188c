"""Liveness and readiness probes: never behind the API key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ServiceDep
from app.api.schemas import ErrorResponse, Health, Ready
from app.core.registry import AUTOENCODER, CLASSIFIER, INDEX

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and answering (even when no model could be loaded)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    responses={503: {"model": ErrorResponse, "description": "Not ready; `detail` says why."}},
)
async def readyz(service: ServiceDep) -> Ready | JSONResponse:
    """200 once both models and the index serve; 503 naming each missing piece otherwise."""
    missing = service.registry.missing()
    if missing:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in missing.items())
        return JSONResponse({"detail": f"not ready: {reasons}"}, status_code=503)
    current = service.registry.current
    serving = {
        CLASSIFIER: current.classifier,
        AUTOENCODER: current.autoencoder,
        INDEX: current.index,
    }
    return Ready(
        status="ready",
        models={name: model.version for name, model in serving.items() if model is not None},
    )
