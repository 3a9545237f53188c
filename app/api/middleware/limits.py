"""Refuse oversized or stalled request bodies early, with the same JSON error as every
other refusal of that path (``app.api.errors.error_response``).

Each route has its own cap, which follows from what it declares it accepts
(app/api/route_needs.py: a one-file endpoint takes one file's worth, /classify a request's
worth of files, everything else next to nothing), so no endpoint accepts the largest body any
endpoint may take. A declared ``Content-Length`` over the cap is answered 413 before the body
is read (one that is not a whole number of at most 18 ASCII digits, 400); a chunked body is
counted as it arrives and cut off at the cap, so at most the cap is ever spooled to disk. A
body that stops arriving (an upload stalled half-way) is answered 408 after
``body_timeout_s`` without data, which frees its connection and spooled parts;
uvicorn itself has no such timeout, and none at all for the head (the proxy's job).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.api.numbers import MAX_DIGITS, whole_number
from app.api.route_map import RouteMap

# Boundaries and part headers (a long file name included) on top of the files themselves.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Bodies of paths without a cap of their own: no other endpoint reads one.
DEFAULT_BODY_BYTES = 64 * 1024
# The upload endpoints take file parts only; other (text) fields are held in memory by the
# multipart parser, so their number and size are kept small (Starlette answers 400 beyond).
MAX_FORM_FIELDS = 16
MAX_FORM_FIELD_BYTES = 16 * 1024
# The rest of a refused body is never read, so the connection cannot be reused.
_CLOSE = {"Connection": "close"}
# The HTTP servers check the header's syntax before the app sees it; this bound holds for
# any ASGI server, and no body the service takes needs more digits.
_BAD_LENGTH = f"Content-Length must be a whole number of at most {MAX_DIGITS} ASCII digits"


class RequestBodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        body_limits: Sequence[tuple[BaseRoute, int]],
        body_timeout_s: float,
        default_limit: int = DEFAULT_BODY_BYTES,
    ) -> None:
        self.app = app
        self.limits = RouteMap(body_limits)
        self.body_timeout_s = body_timeout_s
        self.default_limit = default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope)
        if limit is None:
            limit = self.default_limit
        detail = f"request body exceeds the {limit} byte limit of {scope['path']}"
        declared = Headers(scope=scope).get("content-length")
        length = whole_number(declared)
        if declared is not None and length is None:
            refusal = error_response(scope["path"], _BAD_LENGTH, 400, _CLOSE)
            await refusal(scope, receive, send)
            return
        if length is not None and length > limit:
            refusal = error_response(scope["path"], detail, 413, _CLOSE)
            await refusal(scope, receive, send)
            return
        received = 0
        more_body = True

        async def guarded_receive() -> Message:
            nonlocal received, more_body
            if not more_body:  # after the body: only a disconnect can come, wait for it
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout_s):  # no task, unlike wait_for
                    message = await receive()
            except TimeoutError:
                stalled = f"no request body data for {self.body_timeout_s:g} s"
                raise HTTPException(408, detail=stalled, headers=_CLOSE) from None
            if message["type"] == "http.request":
                more_body = message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    # JSON via FastAPI's handler
                    raise HTTPException(413, detail=detail, headers=_CLOSE)
            return message

        await self.app(scope, guarded_receive, send)
