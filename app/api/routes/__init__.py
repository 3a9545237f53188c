"""HTTP routes, one module per concern; each stays thin and calls the plain modules."""

from typing import Any

from app.api.schemas import ErrorResponse

_ERROR = {"model": ErrorResponse}

UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**_ERROR, "description": "Truncated or corrupt image."},
    404: {**_ERROR, "description": "The pinned version or label is not loaded (see /models)."},
    413: {**_ERROR, "description": "Too many bytes, pixels or files."},
    415: {**_ERROR, "description": "Not an image in a supported format."},
    422: {**_ERROR, "description": "Missing `file` field or bad parameter."},
    503: {
        **_ERROR,
        "description": "The model is not loaded (see /readyz), or the service is overloaded:"
        " the request was shed before its model ran; retry after `Retry-After` seconds.",
    },
}

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {**_ERROR, "description": "Missing or wrong X-API-Key (only when API_KEY is set)."},
}
