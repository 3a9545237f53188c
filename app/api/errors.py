"""The handlers that turn ``ServiceError`` and unexpected exceptions into JSON responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.api.middleware.request_context import REQUEST_ID_HEADER, request_id_of
from app.core.errors import ServiceError, ShedError

logger = logging.getLogger(__name__)


V2_PREFIX = "/v2/"


def error_response(
    path: str, message: str, status_code: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The one shape of an error answered before a route runs (by a middleware): the Open
    Inference Protocol's ``{"error": ...}`` on /v2 and under it, ``{"detail": ...}``
    everywhere else, the same shapes the routes themselves answer."""
    v2 = path.startswith(V2_PREFIX) or path == V2_PREFIX.rstrip("/")
    key = "error" if v2 else "detail"
    return JSONResponse({key: message}, status_code=status_code, headers=headers)


def shed_response(path: str, error: ServiceError) -> JSONResponse:
    """The JSON answer for ``error``; a shed request also gets ``Retry-After``."""
    return error_response(path, error.detail, error.status_code, retry_headers(error))


def retry_headers(error: ServiceError) -> dict[str, str]:
    """``Retry-After`` for a shed request, else nothing."""
    if isinstance(error, ShedError) and error.retry_after_s is not None:
        return {"Retry-After": str(error.retry_after_s)}
    return {}


def invalid_parameter(
    location: str, name: str, value: object, message: str
) -> RequestValidationError:
    """The 422 FastAPI itself gives a parameter that fails validation, for the parameters an
    endpoint reads itself (``location``: ``query``, ``header`` or ``body``)."""
    error = {"type": "value_error", "loc": (location, name), "msg": message, "input": value}
    return RequestValidationError([error])


async def _service_error_handler(request: Request, error: Exception) -> JSONResponse:
    # Starlette types every handler as taking any exception; this one is installed for
    # ServiceError, which Starlette matches by class before calling it.
    if not isinstance(error, ServiceError):
        raise error
    return shed_response(request.url.path, error)


async def _unexpected_error_handler(request: Request, error: Exception) -> JSONResponse:
    """Genuine bugs only: log the traceback, answer a plain JSON 500 and keep serving.

    Starlette sends this response outside every middleware, so it names the request ID itself.
    """
    request_id = request_id_of(request)
    logger.exception(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        extra={"fields": {"request_id": request_id}},
    )
    return JSONResponse(
        {"detail": "internal server error", "request_id": request_id},
        status_code=500,
        headers={REQUEST_ID_HEADER: request_id},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)
