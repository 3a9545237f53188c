"""The X-API-Key check, done on the request head so a refused client's body is never read.

A FastAPI dependency runs only after the multipart body has been parsed (and spooled to
disk), so an unauthenticated client could still make the server read a full-size upload.
This ASGI middleware answers the 401 before the app calls ``receive``. The routers still
declare ``API_KEY_SCHEME`` so that the OpenAPI schema documents the header.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from fastapi.security import APIKeyHeader
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response

HEADER = "X-API-Key"
DETAIL = f"missing or wrong {HEADER} header"

API_KEY_SCHEME = APIKeyHeader(
    name=HEADER,
    auto_error=False,
    description="Needed for /admin/* when API_KEY is set, and everywhere but the probes "
    "and the web page when API_KEY_SCOPE=all.",
)


class ApiKeyMiddleware:
    """401 for a request to one of ``guarded_routes`` unless its X-API-Key equals ``api_key``.

    With ``api_key`` None nothing is checked. A path that matches no guarded route (the
    probes, the page, a 404, a wrong method) passes through untouched.
    """

    def __init__(
        self, app: ASGIApp, api_key: str | None, guarded_routes: Sequence[BaseRoute]
    ) -> None:
        self.app = app
        self.expected = api_key.encode() if api_key else None
        self.guarded_routes = guarded_routes

    def _guarding_route(self, scope: Scope) -> BaseRoute | None:
        for route in self.guarded_routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route
        return None

    def _has_key(self, scope: Scope) -> bool:
        given = Headers(scope=scope).get(HEADER)
        return given is not None and secrets.compare_digest(given.encode(), self.expected or b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.expected is not None:
            route = self._guarding_route(scope)
            if route is not None and not self._has_key(scope):
                scope["route"] = route  # the metrics label the 401 by its route template
                refusal = error_response(
                    scope["path"], DETAIL, 401, headers={"WWW-Authenticate": HEADER}
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def open_endpoints_warning(
    api_key: str | None, sensitive_routes: Sequence[BaseRoute]
) -> str | None:
    """The start-up warning when no API key is set: which operator endpoints anyone who can
    reach the server may call (None when a key is set)."""
    if api_key:
        return None
    paths = sorted({getattr(route, "path", "") for route in sensitive_routes} - {""})
    return (
        f"API_KEY is not set: {', '.join(paths)} are open to anyone who can reach this server "
        "(/admin/reload loads new model versions; /models and /metrics describe the service). "
        "Set API_KEY to guard /admin/*, and API_KEY_SCOPE=all to guard every endpoint but the "
        "probes and the page."
    )
