"""Exceptions that carry their HTTP status, and the handlers that turn them into JSON.

Plain modules (imaging, registry) raise these so they stay usable without HTTP, while the
app maps them to ``{"detail": ...}`` responses in one place.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class: ``status_code`` is what the client receives, the message is the detail."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadImageError(ServiceError):
    """The upload is an image of a supported format but cannot be decoded (truncated, corrupt)."""

    status_code = 400


class UnsupportedImageError(ServiceError):
    """The upload is not an image, or not one of the supported formats."""

    status_code = 415


class PayloadTooLargeError(ServiceError):
    """Too many bytes, too many pixels or too many files."""

    status_code = 413


class ModelUnavailableError(ServiceError):
    """The model an endpoint needs is not loaded (see ``/readyz`` for why)."""

    status_code = 503


class InvalidModelError(ServiceError):
    """A model or index version on disk breaks the contract; it is refused, never served."""


async def _service_error_handler(request: Request, error: ServiceError) -> JSONResponse:
    return JSONResponse({"detail": error.detail}, status_code=error.status_code)


async def _unexpected_error_handler(request: Request, error: Exception) -> JSONResponse:
    """Genuine bugs only: log the traceback, answer a plain JSON 500 and keep serving."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error_handler)
