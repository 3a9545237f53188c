"""A client that leaves has its inference cancelled: its thread, queue place and model call go
to someone still waiting (uvicorn itself does not stop a request whose client left).

Under ``python -m app`` the HTTP protocol (app/protocol.py) puts a ``DisconnectNotice`` in
each request's scope and fires it when the connection goes; elsewhere (``uvicorn
app.main:app``, tests) one watcher task waits on the ASGI ``receive`` channel instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.types import Receive, Scope

from app.core.errors import ClientDisconnectedError

T = TypeVar("T")

# Key in ``scope["extensions"]`` of the request's DisconnectNotice.
DISCONNECT_EXTENSION = "cellsign.disconnect"


class DisconnectNotice:
    """Calls back once the client of a request in progress has closed the connection.

    The ASGI way to learn of a disconnect is a task blocked on ``receive()`` for the whole
    request, which costs the event loop a task, a wake-up and a cancellation per request;
    the protocol, which sees the connection go, calls the callback instead.
    """

    def __init__(self) -> None:
        self._callback: Callable[[], None] | None = None
        self.disconnected = False

    def call_on_disconnect(self, callback: Callable[[], None] | None) -> None:
        """``callback`` runs (on the event loop) when the client leaves; None forgets it."""
        self._callback = callback

    def fire(self) -> None:
        self.disconnected = True
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


async def unless_disconnected(scope: Scope, receive: Receive, work: Awaitable[T]) -> T:
    """Run ``work``, but cancel it when the client disconnects first (``ClientDisconnectedError``,
    a 499 in the logs and metrics). Either way of hearing of it cancels this task, which is
    cheaper on the event loop than running ``work`` as a task of its own."""
    current = asyncio.current_task()
    assert current is not None
    finished = gone = False

    def cancel_work() -> None:
        nonlocal gone
        if not finished:  # never cancel what comes after ``work``
            gone = True
            current.cancel()

    async def watch() -> None:
        await _disconnect(receive)
        cancel_work()

    notice: DisconnectNotice | None = scope.get("extensions", {}).get(DISCONNECT_EXTENSION)
    watcher = None
    if notice is None:
        watcher = asyncio.create_task(watch())
    elif notice.disconnected:
        cancel_work()
    else:
        notice.call_on_disconnect(cancel_work)
    try:
        result = await work
        finished = True  # set before any other task can run
        return result
    except asyncio.CancelledError:
        if gone:
            current.uncancel()
            raise ClientDisconnectedError("the client closed the connection") from None
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
        if notice is not None:
            notice.call_on_disconnect(None)


async def _disconnect(receive: Receive) -> None:
    """Return when the client has gone (the request body has already been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
