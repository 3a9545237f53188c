"""The handlers that turn ``ServiceError`` and unexpected exceptions into JSON responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.core.errors import ServiceError

logger = logging.getLogger(__name__)


async def _service_error_handler(request: Request, error: ServiceError) -> JSONResponse:
    return JSONResponse({"detail": error.detail}, status_code=error.status_code)


async def _unexpected_error_handler(request: Request, error: Exception) -> JSONResponse:
    """Genuine bugs only: log the traceback, answer a plain JSON 500 and keep serving."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error_handler)
