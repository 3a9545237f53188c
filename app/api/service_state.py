"""The service a worker process runs: its models, micro-batchers, decode pool, gallery and
reload watchers, built from the settings when the app starts and closed when it stops
(the lifespan of ``app.main.create_app``); the routes find it on ``app.state.service``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from anyio import to_thread

from app.api.metrics import ServiceMetrics
from app.api.overload.decode_pool import DecodePool
from app.core.batching import MicroBatcher
from app.core.imaging import set_pixel_limit
from app.core.registry import ModelRegistry
from app.core.reload_signal import ReloadSignal
from app.core.reloading import join_workers, reload_logged, start_watchers, stop_watchers
from app.core.runtime import select_device, use_threads
from app.gallery.service import GalleryService, open_gallery
from app.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """Built once by ``build_service_state`` and kept on ``app.state.service``."""

    settings: Settings
    metrics: ServiceMetrics
    registry: ModelRegistry
    batchers: dict[str, MicroBatcher]
    device: str
    decode_pool: DecodePool
    # Pillow's process-wide pixel limit before this service set its own (None: no limit).
    previous_pixel_limit: int | None
    reload_signal: ReloadSignal | None = None  # set when several worker processes serve
    gallery: GalleryService | None = None  # the living gallery (app/gallery/service.py)
    watchers: list[asyncio.Task[None]] = field(default_factory=list)  # the reload watchers


async def build_service_state(
    settings: Settings, metrics: ServiceMetrics, batcher_names: Iterable[str]
) -> ServiceState:
    """Everything a worker serves with, ready: the newest valid model versions loaded, a
    micro-batcher of each name, the gallery started and, with several workers, this one
    caught up with their admin changes. Blocking work runs off the event loop."""
    previous_pixel_limit = set_pixel_limit(settings.max_image_pixels)
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
        for name in batcher_names
    }
    service = ServiceState(
        settings,
        metrics,
        registry,
        batchers,
        device,
        DecodePool.from_settings(settings),
        previous_pixel_limit,
        ReloadSignal(settings.runtime_dir) if settings.runtime_dir else None,
    )
    try:
        began = time.monotonic()
        loaded = await reload_logged(registry)
        logger.info("serving on %s; missing: %s", device, registry.missing() or "nothing")
        gallery = await to_thread.run_sync(open_gallery, settings, registry)
        service.gallery = gallery
        await to_thread.run_sync(gallery.start)
        if service.reload_signal is not None:
            await join_workers(registry, service.reload_signal, began, loaded)
    except BaseException:
        await close_service_state(service)
        raise
    return service


def start_reload_watchers(service: ServiceState) -> None:
    """From now on new versions on disk (every ``RELOAD_INTERVAL_S``) and admin changes made
    in other workers reach this one."""
    service.watchers = start_watchers(
        service.registry, service.reload_signal, service.settings.reload_interval_s
    )


async def close_service_state(service: ServiceState) -> None:
    """Stop in order: leave the other workers (admin calls stop waiting for this one), stop
    reloading, close the gallery, drop decoding that has not started, let the batchers finish
    what is queued, and give back what the process held."""
    if service.reload_signal is not None:
        service.reload_signal.leave()
    await stop_watchers(service.watchers)
    if service.gallery is not None:
        await to_thread.run_sync(service.gallery.close)
    service.decode_pool.close()
    for batcher in service.batchers.values():
        await to_thread.run_sync(batcher.close)
    set_pixel_limit(service.previous_pixel_limit)
    service.metrics.process_exiting()
