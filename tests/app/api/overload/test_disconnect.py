"""A client that leaves cancels its work, whether the protocol's ``DisconnectNotice`` or the
ASGI ``receive`` channel tells of it; work that finishes first is never cancelled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.api.overload.disconnect import (
    DISCONNECT_EXTENSION,
    DisconnectNotice,
    unless_disconnected,
)
from app.core.errors import ClientDisconnectedError

pytestmark = pytest.mark.anyio

# Work that is not cancelled ends after this, and its test then fails instead of hanging.
UNCANCELLED_S = 30


async def never_disconnects() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def scope_with(notice: DisconnectNotice) -> dict[str, Any]:
    return {"type": "http", "extensions": {DISCONNECT_EXTENSION: notice}}


async def test_the_notice_cancels_the_work_it_is_waiting_on() -> None:
    notice = DisconnectNotice()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.sleep(UNCANCELLED_S)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "not cancelled"

    async def leave() -> None:
        await started.wait()
        notice.fire()

    leaving = asyncio.create_task(leave())
    with pytest.raises(ClientDisconnectedError):
        await unless_disconnected(scope_with(notice), never_disconnects, work())
    await leaving
    assert cancelled.is_set()
    task = asyncio.current_task()
    assert task is not None and not task.cancelling()  # the cancel was taken back


async def test_a_client_gone_before_the_work_starts_cancels_it_at_once() -> None:
    notice = DisconnectNotice()
    notice.fire()
    ran = False

    async def work() -> None:
        nonlocal ran
        await asyncio.sleep(0)
        ran = True

    with pytest.raises(ClientDisconnectedError):
        await unless_disconnected(scope_with(notice), never_disconnects, work())
    assert not ran


async def test_without_a_notice_the_receive_channel_tells() -> None:
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def work() -> None:
        gone.set()
        await asyncio.sleep(UNCANCELLED_S)

    with pytest.raises(ClientDisconnectedError):
        await unless_disconnected({"type": "http"}, receive, work())


async def test_finished_work_keeps_its_result_and_the_notice_forgets_it() -> None:
    notice = DisconnectNotice()

    async def work() -> str:
        return "answer"

    assert await unless_disconnected(scope_with(notice), never_disconnects, work()) == "answer"
    notice.fire()  # the client leaves afterwards: nothing left to cancel
    await asyncio.sleep(0)  # a cancel of this task would land here
    assert notice.disconnected
