"""Refuse oversized request bodies early, with the same JSON ``detail`` as every other error.

Each path has its own cap (a one-file endpoint takes one file's worth, /classify a request's
worth of files, everything else next to nothing), so no endpoint accepts the largest body any
endpoint may take. A declared ``Content-Length`` over the cap is answered before the body is
read; a chunked body is counted as it arrives and cut off at the cap, so at most the cap is
ever spooled to disk.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Boundaries and part headers (a long file name included) on top of the files themselves.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Bodies of paths without a cap of their own: no other endpoint reads one.
DEFAULT_BODY_BYTES = 64 * 1024
# The upload endpoints take file parts only; other (text) fields are held in memory by the
# multipart parser, so their number and size are kept small (Starlette answers 400 beyond).
MAX_FORM_FIELDS = 16
MAX_FORM_FIELD_BYTES = 16 * 1024


class RequestSizeLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        body_limits: Mapping[str, int],
        default_limit: int = DEFAULT_BODY_BYTES,
    ) -> None:
        self.app = app
        self.body_limits = body_limits
        self.default_limit = default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.body_limits.get(scope["path"], self.default_limit)
        detail = f"request body exceeds the {limit} byte limit of {scope['path']}"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, detail=detail)  # JSON via FastAPI's handler
            return message

        await self.app(scope, counting_receive, send)
