"""The access log: one structured record per request on the ``app.access`` logger.

Fields: ``request_id``, ``method``, ``path``, ``endpoint`` (the route template, as in the
metrics), ``status``, ``duration_ms`` and, when the request went through them,
``read_ms``/``decode_ms``/``queue_ms``/``model_ms``/``encode_ms``; ``model_version`` when the
response names one (``X-Model-Version``), ``trace_id`` when the request is traced or came with
a valid ``traceparent``, and the ``client`` address. ``LOG_FORMAT`` decides how a record is
written (app/logging_config.py); ``LOG_LEVEL=warning`` or ``ACCESS_LOG=false`` silence it.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import Scope

from app.core.tracing import RequestTrace

ACCESS_LOGGER = logging.getLogger("app.access")
MAX_PATH_CHARS = 256  # a path is the client's to choose; the line stays bounded
_STAGE_FIELDS = (
    ("read", "read_ms"),
    ("decode", "decode_ms"),
    ("queue", "queue_ms"),
    ("model", "model_ms"),
    ("encode", "encode_ms"),
)


def access_fields(
    scope: Scope,
    request: RequestTrace,
    status: int,
    duration_s: float,
    model_version: str | None,
    trace_id: str | None,
) -> dict[str, Any]:
    route = scope.get("route")
    fields: dict[str, Any] = {
        "request_id": request.request_id,
        "method": scope["method"],
        "path": scope["path"][:MAX_PATH_CHARS],
        "endpoint": getattr(route, "path", None) or "unmatched",
        "status": status,
        "duration_ms": round(duration_s * 1000, 2),
    }
    for stage_name, key in _STAGE_FIELDS:
        milliseconds = request.stage_ms.get(stage_name)
        if milliseconds is not None:
            fields[key] = round(milliseconds, 2)
    if model_version:
        fields["model_version"] = model_version
    if trace_id:
        fields["trace_id"] = trace_id
    client = scope.get("client")
    if client:
        fields["client"] = client[0]
    return fields


def log_access(fields: dict[str, Any]) -> None:
    ACCESS_LOGGER.info("request", extra={"fields": fields})
