"""The FastAPI app: ``create_app(settings)`` for tests and embedding, ``app`` for uvicorn.

The lifespan loads the newest valid model versions once, starts the micro-batchers and the
hot-reload poll, and on shutdown (SIGTERM via uvicorn) lets queued inference finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator

from anyio import to_thread
from fastapi import FastAPI, Security
from fastapi.staticfiles import StaticFiles
from opentelemetry.trace import TracerProvider
from starlette.routing import BaseRoute

from app.api.admission import AdmissionMiddleware
from app.api.auth import API_KEY_SCHEME, ApiKeyMiddleware, open_endpoints_warning
from app.api.cors import install_cors
from app.api.deps import ServiceState
from app.api.errors import install_error_handlers
from app.api.limits import MULTIPART_OVERHEAD_BYTES, RequestBodyLimitMiddleware
from app.api.metrics import RequestMetricsMiddleware, ServiceMetrics
from app.api.request_context import RequestContextMiddleware, fastapi_telemetry
from app.api.routes import (
    AUTH_ERRORS,
    admin,
    classify,
    denoise,
    gallery,
    health,
    info,
    page,
    reports,
    similar,
    v2,
)
from app.api.routes.page import STATIC_DIR
from app.api.uploads import DecodePool
from app.core.batching import MicroBatcher
from app.core.imaging import set_pixel_limit
from app.core.registry import ModelRegistry
from app.core.reload_signal import CHECK_INTERVAL_S, ReloadSignal
from app.core.runtime import select_device, use_threads
from app.core.tracing import build_tracer_provider
from app.gallery.service import open_gallery
from app.logging_config import configure_logging
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)

BATCHER_BY_PATH = {"/classify": "classify", "/denoise": "denoise", "/similar": "encode"}
BATCHERS = tuple(BATCHER_BY_PATH.values())
V2_INFER_PATH = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/infer")
V2_LABEL = "v2"  # its batchers depend on the outputs the request asks for
# Routers behind the API key with API_KEY_SCOPE=all (KEYED_ROUTERS are whenever it is set).
SCOPE_ALL_MODULES = (classify, denoise, similar, gallery, info, reports, v2)
# Behind the API key whenever API_KEY is set, whatever its scope.
KEYED_ROUTERS = (admin.router, gallery.writes)
# Operator endpoints named by the start-up warning when API_KEY is unset (with the gallery's
# writes).
SENSITIVE_MODULES = (admin, info)

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


async def _poll_for_new_versions(registry: ModelRegistry, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await _reload_logged(registry)


async def _follow_reload_signal(registry: ModelRegistry, signal: ReloadSignal) -> None:
    """An admin call in a worker process of this server (this one included) changed what
    serves: reload from disk and acknowledge it (app/core/reload_signal.py)."""
    while True:
        await asyncio.sleep(CHECK_INTERVAL_S)
        if signal.received():  # a stat: cheap enough for the event loop
            await _reload_acknowledged(registry, signal)


async def _reload_acknowledged(registry: ModelRegistry, signal: ReloadSignal) -> None:
    began = time.monotonic()
    signal.acknowledge(began, await _reload_logged(registry))


async def _reload_logged(registry: ModelRegistry) -> bool:
    """Neither start-up nor a poll may die on a surprise (say an unreadable folder): the
    process stays up, /readyz says what is missing, and the next poll may succeed."""
    try:
        await to_thread.run_sync(registry.reload)
    except Exception:
        logger.exception("loading models from %s failed", registry.model_dir)
        return False
    return True


def admitted_batcher(path: str) -> str | None:
    """The batcher an inference request's path feeds, which labels its refusals; None for
    the paths that admission control leaves alone."""
    if path in BATCHER_BY_PATH:
        return BATCHER_BY_PATH[path]
    return V2_LABEL if V2_INFER_PATH.fullmatch(path) else None


def body_limits(settings: Settings) -> list[tuple[BaseRoute, int]]:
    """Largest request body per upload route: one file's worth on the one-file endpoints,
    ``MAX_FILES_PER_REQUEST`` files' worth, at most ``MAX_REQUEST_BYTES``, on /classify and
    the v2 infer routes, ``GALLERY_MAX_FILES`` files' worth (same cap) on POST /gallery
    (every other route gets the small default). A v2 body is at most
    that many encoded images, each after its 4-byte length, behind a small JSON header, or
    a JSON part of at most ``v2_models.max_json_bytes``; the infer route itself refuses,
    while streaming, any byte past what its checked JSON header announces, and keeps no
    more than that."""
    one_file = settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    all_files = (
        min(settings.max_upload_bytes * settings.max_files_per_request, settings.max_request_bytes)
        + MULTIPART_OVERHEAD_BYTES
    )
    gallery_files = (
        min(settings.max_upload_bytes * settings.gallery_max_files, settings.max_request_bytes)
        + MULTIPART_OVERHEAD_BYTES
    )
    v2_infer = [route for route in v2.router.routes if isinstance(route, v2.V2InferRoute)]
    limits = [(route, one_file) for m in (denoise, similar) for route in m.router.routes]
    limits += [(route, gallery_files) for route in gallery.writes.routes if _posts(route)]
    return limits + [(route, all_files) for route in [*classify.router.routes, *v2_infer]]


def _posts(route: BaseRoute) -> bool:
    return "POST" in (getattr(route, "methods", None) or ())


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

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format, settings.access_log)
        sensitive = [route for m in SENSITIVE_MODULES for route in m.router.routes]
        warning = open_endpoints_warning(settings.api_key, [*sensitive, *gallery.writes.routes])
        if warning:
            logger.warning(warning)
        pillow_limit = set_pixel_limit(settings.max_image_pixels)
        use_threads(settings.model_thread_count)
        device = select_device(settings.device)
        registry = ModelRegistry(
            settings.model_dir,
            device,
            on_change=metrics.observe_models,
            versions_kept=settings.model_versions_kept,
        )
        batchers = {
            name: MicroBatcher(
                name,
                settings.batch_max_size,
                settings.batch_max_wait_ms / 1000,
                max_queued=settings.queue_limit,
                observer=metrics.batcher_observer(name),
            )
            for name in BATCHERS
        }
        signal = ReloadSignal(settings.runtime_dir) if settings.runtime_dir else None
        decode_pool = DecodePool.from_settings(settings)
        app.state.service = ServiceState(
            settings,
            metrics,
            registry,
            batchers,
            device,
            decode_pool,
            signal,
        )
        began = time.monotonic()
        loaded = await _reload_logged(registry)
        logger.info("serving on %s; missing: %s", device, registry.missing() or "nothing")
        living_gallery = await to_thread.run_sync(open_gallery, settings, registry)
        await to_thread.run_sync(living_gallery.start)
        app.state.service.gallery = living_gallery
        watchers = []
        if settings.reload_interval_s > 0:
            poll = _poll_for_new_versions(registry, settings.reload_interval_s)
            watchers.append(asyncio.create_task(poll))
        if signal is not None:
            # Join the other workers; then catch up with an admin change made during the load.
            signal.acknowledge(began, loaded)
            while signal.received():
                await _reload_acknowledged(registry, signal)
            watchers.append(asyncio.create_task(_follow_reload_signal(registry, signal)))
        try:
            yield
        finally:
            if signal is not None:
                signal.leave()  # admin calls stop waiting for this worker
            for watcher in watchers:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await to_thread.run_sync(living_gallery.close)
            decode_pool.close()
            for batcher in batchers.values():
                await to_thread.run_sync(batcher.close)
            set_pixel_limit(pillow_limit)
            metrics.process_exiting()

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
    keyed_routers = list(KEYED_ROUTERS)
    if settings.api_key_scope == "all":
        keyed_routers += [module.router for module in SCOPE_ALL_MODULES]
    guarded_routes = [route for router in keyed_routers for route in router.routes]
    app.add_middleware(
        RequestBodyLimitMiddleware,
        body_limits=body_limits(settings),
        body_timeout_s=settings.body_read_timeout_s,
    )
    app.add_middleware(
        AdmissionMiddleware,
        limit=settings.inference_limit,
        timeout_s=settings.request_timeout_s,
        batcher_of=admitted_batcher,
        metrics=metrics,
    )
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, guarded_routes=guarded_routes)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    install_cors(app, settings.cors_origins)
    # Outermost, around CORS: every response, preflights and the 401 and 413 included, gets
    # the request ID and the security headers.
    app.add_middleware(
        RequestContextMiddleware, tracer_provider=tracer_provider, access_log=settings.access_log
    )

    documented_key = [Security(API_KEY_SCHEME)]  # the check itself is ApiKeyMiddleware
    # Routes are matched in order: the inference routes (most of the traffic) come first.
    for router in (*(module.router for module in SCOPE_ALL_MODULES), *KEYED_ROUTERS):
        app.include_router(router, dependencies=documented_key, responses=AUTH_ERRORS)
    app.include_router(health.router)
    app.include_router(v2.probes)
    app.include_router(page.router)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


app = create_app()
