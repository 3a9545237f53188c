"""The FastAPI app: ``create_app(settings)`` for tests and embedding, ``app`` for uvicorn.

The app is assembled from the routers it serves (app/api/routers.py) and what each of their
routes declares it needs (app/api/route_needs.py): its body limit, the API key, admission
control and the micro-batchers. The lifespan builds the service (app/api/service_state.py:
the newest valid model versions, the micro-batchers, the gallery), starts the hot-reload
watchers, and on shutdown (SIGTERM via uvicorn) lets queued inference finish.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Security
from fastapi.staticfiles import StaticFiles
from opentelemetry.trace import TracerProvider

from app.api import route_needs
from app.api.errors import install_error_handlers
from app.api.metrics import ServiceMetrics
from app.api.middleware.auth import API_KEY_SCHEME, ApiKeyMiddleware, open_endpoints_warning
from app.api.middleware.cors import install_cors
from app.api.middleware.limits import RequestBodyLimitMiddleware
from app.api.middleware.request_context import RequestContextMiddleware, fastapi_telemetry
from app.api.middleware.request_metrics import RequestMetricsMiddleware
from app.api.overload.admission import AdmissionMiddleware
from app.api.routers import ROUTERS, served_routes
from app.api.routes import AUTH_ERRORS
from app.api.routes.page import STATIC_DIR
from app.api.service_state import build_service_state, close_service_state, start_reload_watchers
from app.core.tracing import build_tracer_provider
from app.logging_config import configure_logging
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """
Serves two TensorFlow models trained offline and exported as versioned SavedModels:

* **SIGNS classifier**: hand-gesture photo -> digit 0-5 (`POST /classify`).
* **Malaria autoencoder**: denoises a cell image (`POST /denoise`), and its encoder's codes
  find similar cells in the living gallery (`POST /similar?label=`), which users add to,
  list and prune (`/gallery`).

The same models speak the Open Inference Protocol (KServe v2) under `/v2` (e.g. with
`tritonclient`). `?version=N` or `?label=stable` pins a loaded version (see `/models`) on
/classify and /denoise; every inference response names its version in `X-Model-Version`.

Uploads: JPEG, PNG, BMP, GIF (first frame), WebP or TIFF, any colour mode, EXIF orientation
honoured. Errors are JSON `{"detail": ...}`. When `API_KEY` is set, `/admin/*` and the
gallery's writes need the `X-API-Key` header; with `API_KEY_SCOPE=all` every endpoint except
`/healthz` and `/readyz` does.
"""


def create_app(
    settings: Settings | None = None, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """``tracer_provider``: spans go there instead of to the one the settings describe (tests
    pass one with an in-memory exporter; an embedding program may pass its own)."""
    settings = settings or get_settings()
    if tracer_provider is None:
        tracer_provider = build_tracer_provider(
            settings.otel_exporter_otlp_endpoint, settings.otel_service_name
        )
    metrics = ServiceMetrics()
    routes = served_routes()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format, settings.access_log)
        warning = open_endpoints_warning(settings.api_key, route_needs.operator_routes(routes))
        if warning:
            logger.warning(warning)
        batchers = route_needs.batcher_names(routes)
        service = await build_service_state(settings, metrics, batchers)
        app.state.service = service
        start_reload_watchers(service)
        try:
            yield
        finally:
            await close_service_state(service)

    app = FastAPI(
        title="cellsign",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=fastapi_telemetry(tracer_provider),
        # No path has a trailing-slash twin; Starlette's redirect to one would be an absolute
        # URL built from the client's Host header, so /models/ is a 404 instead.
        redirect_slashes=False,
    )
    install_error_handlers(app)
    documented_key = [Security(API_KEY_SCHEME)]  # the check itself is ApiKeyMiddleware
    for router in ROUTERS:
        if route_needs.behind_key(router):
            app.include_router(router, dependencies=documented_key, responses=AUTH_ERRORS)
        else:
            app.include_router(router)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    app.add_middleware(
        RequestBodyLimitMiddleware,
        body_limits=route_needs.body_limits(routes, settings),
        body_timeout_s=settings.body_read_timeout_s,
    )
    app.add_middleware(
        AdmissionMiddleware,
        limit=settings.inference_limit,
        timeout_s=settings.request_timeout_s,
        admitted=route_needs.admitted(routes),
        metrics=metrics,
    )
    guarded = route_needs.guarded(routes, settings.api_key_scope)
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, guarded_routes=guarded)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    install_cors(app, settings.cors_origins)
    # Outermost, around CORS: every response, preflights and the 401 and 413 included, gets
    # the request ID and the security headers.
    app.add_middleware(
        RequestContextMiddleware, tracer_provider=tracer_provider, access_log=settings.access_log
    )
    return app


app = create_app()
