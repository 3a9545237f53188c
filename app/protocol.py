"""The HTTP/1.1 protocol ``python -m app`` serves with: uvicorn's httptools protocol with a
bound on the request head and JSON refusals.

httptools (a C parser) costs about a millisecond less server CPU per request than h11
(docs/history/performance-history.md), but uvicorn gives it no head size limit: a header that never
ends is buffered and re-joined as it grows, which cost seconds of event-loop CPU for 64 MB.
Here the bytes that arrive while a head is incomplete are counted, and past
``MAX_HEADER_BYTES`` the client gets 431 and the connection is closed, so such a head costs
at most the limit plus one read. A request httptools cannot parse gets a JSON 400, and
uvicorn's plain-text 503 past ``MAX_CONCURRENCY`` becomes a
JSON ``detail`` like every other refusal, and health probes are served past that limit.
Each request's scope carries a ``DisconnectNotice`` (app/api/overload/disconnect.py), which
the protocol fires when the client leaves: the inference path hears of it without a task
waiting on ``receive``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from app.api.overload.disconnect import DISCONNECT_EXTENSION, DisconnectNotice

CONCURRENCY_DETAIL = "overloaded: too many connections; retry later"
# Liveness and readiness probes pass the connection limit: they cost next to nothing, and
# an orchestrator that sees them fail under load would restart a busy but healthy server.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """The head limit is ``config.h11_max_incomplete_event_size`` (uvicorn's own setting for
    the same bound in its h11 protocol; ``app.server`` sets it from ``MAX_HEADER_BYTES``)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limit = config.h11_max_incomplete_event_size
        # Unset, the bound is h11's default, as in uvicorn's h11 protocol.
        self._head_limit = DEFAULT_MAX_INCOMPLETE_EVENT_SIZE if limit is None else limit
        self._in_head = True  # a connection starts by waiting for a head
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        # A read that completes the head may carry body bytes too: only a head still
        # incomplete after it is refused.
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self._head_limit:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0  # the next request on this connection
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and cycle.disconnected:  # left before its response was complete
            extensions: dict[str, Any] = cycle.scope.get("extensions", {})
            notice: DisconnectNotice | None = extensions.get(DISCONNECT_EXTENSION)
            if notice is not None:  # None: a pipelined request whose turn had not come
                notice.fire()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # uvicorn types each extension as a dict (the ASGI spec's are); this one is an object.
        extensions: dict[str, Any] = cycle.scope.setdefault("extensions", {})
        extensions[DISCONNECT_EXTENSION] = DisconnectNotice()
        if app is service_unavailable:  # what uvicorn answers past limit_concurrency
            app = self.app if cycle.scope["path"] in PROBE_PATHS else _json_service_unavailable
        super()._start_asgi_task(cycle, app)

    def _refuse_head(self) -> None:
        detail = f"request line and headers over the {self._head_limit} byte limit"
        self._refuse(b"431 Request Header Fields Too Large", detail)

    def send_400_response(self, msg: str) -> None:
        """What httptools cannot parse (a malformed request line, a Content-Length that is
        not ASCII digits or has thousands of them, ...): a JSON 400 like every refusal."""
        self._refuse(b"400 Bad Request", f"malformed HTTP request: {msg}")

    def _refuse(self, status: bytes, detail: str) -> None:
        """Answer ``detail`` as JSON and close the connection: the rest of its bytes are
        never parsed."""
        if self.transport.is_closing():
            return
        body = json.dumps({"detail": detail}).encode()
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()


async def _json_service_unavailable(
    scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    body = json.dumps({"detail": CONCURRENCY_DETAIL}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
