"""GET /models (what serves, on which device) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import ServiceDep
from app.api.route_needs import RouteNeeds, needs
from app.api.routes.health import gallery_info
from app.api.schemas import ModelsResponse

router = APIRouter(tags=["operations"])
# Named by the start-up warning when no API_KEY is set; behind the key with API_KEY_SCOPE=all.
DESCRIBES_SERVICE = RouteNeeds(operator=True)


@router.get("/models", response_model=ModelsResponse)
@needs(DESCRIBES_SERVICE)
async def models(service: ServiceDep) -> ModelsResponse:
    """Versions, input shapes, training metrics, refused versions and the device in use;
    the gallery /similar searches, and the progress of its re-encoding after a new
    autoencoder version (`gallery.reencoding`)."""
    described = service.registry.describe()
    gallery = gallery_info(service)
    if gallery is not None:
        described["similar_encoder"] = gallery.encoder_version
    return ModelsResponse(
        device=service.device.removeprefix("/"),
        device_requested=service.settings.device,
        gallery=gallery,
        **described,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
@needs(DESCRIBES_SERVICE)
async def metrics(service: ServiceDep) -> Response:
    """Requests and latency per endpoint, micro-batch sizes, model versions serving."""
    return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
