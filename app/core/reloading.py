"""Keeping what serves up to date while the process runs: the poll of ``MODEL_DIR`` for new
versions, and, with several workers, following an admin change made in any of them
(app/core/reload_signal.py). Each reload runs off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from anyio import to_thread

from app.core.registry import ModelRegistry
from app.core.reload_signal import CHECK_INTERVAL_S, ReloadSignal

logger = logging.getLogger(__name__)


async def reload_logged(registry: ModelRegistry) -> bool:
    """Neither start-up nor a poll may die on a surprise (say an unreadable folder): the
    process stays up, /readyz says what is missing, and the next poll may succeed."""
    try:
        await to_thread.run_sync(registry.reload)
    except Exception:
        logger.exception("loading models from %s failed", registry.model_dir)
        return False
    return True


async def join_workers(
    registry: ModelRegistry, signal: ReloadSignal, began: float, loaded: bool
) -> None:
    """Say that this worker serves the disk as of its first load (which ``began`` then), and
    catch up with an admin change made in another worker during that load."""
    signal.acknowledge(began, loaded)
    while signal.received():
        await _reload_acknowledged(registry, signal)


def start_watchers(
    registry: ModelRegistry, signal: ReloadSignal | None, interval_s: float
) -> list[asyncio.Task[None]]:
    """The tasks that reload: every ``interval_s`` (none when 0), and on ``signal``."""
    watchers = []
    if interval_s > 0:
        watchers.append(asyncio.create_task(_poll_for_new_versions(registry, interval_s)))
    if signal is not None:
        watchers.append(asyncio.create_task(_follow_reload_signal(registry, signal)))
    return watchers


async def stop_watchers(watchers: list[asyncio.Task[None]]) -> None:
    for watcher in watchers:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _poll_for_new_versions(registry: ModelRegistry, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await reload_logged(registry)


async def _follow_reload_signal(registry: ModelRegistry, signal: ReloadSignal) -> None:
    """An admin call in a worker process of this server (this one included) changed what
    serves: reload from disk and acknowledge it."""
    while True:
        await asyncio.sleep(CHECK_INTERVAL_S)
        if signal.received():  # a stat: cheap enough for the event loop
            await _reload_acknowledged(registry, signal)


async def _reload_acknowledged(registry: ModelRegistry, signal: ReloadSignal) -> None:
    began = time.monotonic()
    signal.acknowledge(began, await reload_logged(registry))
