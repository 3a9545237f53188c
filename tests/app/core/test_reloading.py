"""The reload watchers: a failed reload is logged and the process carries on; the poll reloads
every interval until stopped; an interval of 0 and no signal start nothing."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from app.core.reloading import reload_logged, start_watchers, stop_watchers

pytestmark = pytest.mark.anyio


class Registry:
    """What the watchers use of a ``ModelRegistry``."""

    def __init__(self, fails: bool = False) -> None:
        self.model_dir = Path("models")
        self.fails = fails
        self.reloads = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def reload(self) -> list[str]:
        self.loop.call_soon_threadsafe(self.reloads.set)
        if self.fails:
            raise PermissionError("models: unreadable")
        return []


async def test_a_failed_reload_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    failing: Any = Registry(fails=True)
    with caplog.at_level(logging.ERROR, logger="app.core.reloading"):
        assert not await reload_logged(failing)
    assert "loading models from models failed" in caplog.text
    working: Any = Registry()
    assert await reload_logged(working)


async def test_the_poll_reloads_until_stopped() -> None:
    registry: Any = Registry()
    assert start_watchers(registry, None, 0) == []
    (poll,) = start_watchers(registry, None, 0.01)
    async with asyncio.timeout(30):  # a poll that never reloads fails here
        await registry.reloads.wait()
    await stop_watchers([poll])
    assert poll.cancelled()
