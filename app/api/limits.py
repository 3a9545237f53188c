"""Refuse oversized request bodies early, with the same JSON ``detail`` as every other error.

A declared ``Content-Length`` over the limit is answered before the body is read; a body
streamed without one is counted as it arrives and cut off at the limit.
"""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestSizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _detail(self) -> str:
        return f"request body exceeds the {self.max_body_bytes} byte limit"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await JSONResponse({"detail": self._detail()}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, detail=self._detail())  # JSON via FastAPI's handler
            return message

        await self.app(scope, counting_receive, send)
