"""CORS for browser pages on other origins: off unless ``CORS_ORIGINS`` names some.

The allowed request headers are the ones the API reads (the key, the request ID, a client
deadline, trace context); the exposed ones let a page read the request ID and the model
version. No credentials mode: the API key travels in a header, never in a cookie.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
ALLOWED_HEADERS = (
    "Content-Type",
    "X-API-Key",
    "X-Request-ID",
    "X-Request-Timeout",
    "traceparent",
    "tracestate",
)
EXPOSED_HEADERS = ("X-Request-ID", "X-Model-Version", "X-Index-Version")


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered in JSON like every error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {
            name: value
            for name, value in response.headers.items()
            if not name.startswith("content-")
        }
        return JSONResponse(
            {"detail": bytes(response.body).decode()},
            status_code=response.status_code,
            headers=headers,
        )


def install_cors(app: FastAPI, origins: Sequence[str]) -> None:
    if not origins:
        return
    app.add_middleware(
        JsonCORSMiddleware,
        allow_origins=list(origins),
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
    )
