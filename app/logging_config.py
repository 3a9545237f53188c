"""How the server's log lines look: readable text or one JSON object per line (``LOG_FORMAT``).

Structured records carry their data in ``extra={"fields": {...}}`` (the access log does);
JSON lines put those fields at the top level, text lines append them as ``key=value``. A line
logged while a request is being handled also carries that request's ``request_id``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Literal, TextIO

from app.core import tracing

LogFormat = Literal["text", "json"]
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_BARE_VALUE = re.compile(r"[^\s\"'=\\]+")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(getattr(record, "fields", None) or {})
    if "request_id" not in fields:
        request = tracing.current()
        if request is not None:
            fields["request_id"] = request.request_id
    return fields


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...fields, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The usual ``time LEVEL logger: message``, then ``key=value`` for each field (values
    with spaces, quotes or control characters are JSON-quoted, so one record stays one line)."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        message = super().formatMessage(record)
        pairs = [f"{key}={_text_value(value)}" for key, value in record_fields(record).items()]
        return " ".join([message, *pairs])


def _text_value(value: Any) -> str:
    text = str(value)
    return text if _BARE_VALUE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def _utc_timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


class _ServerHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installed, so reconfiguring replaces it."""


def configure_logging(level: str, log_format: LogFormat, quiet_uvicorn_access: bool) -> None:
    """Send the app's records to stderr in ``log_format``, at ``level``.

    Like ``logging.basicConfig``, a root logger that someone else configured (uvicorn
    ``--log-config``, an embedding program, pytest) is left as it is.
    In JSON mode uvicorn's own handlers get the JSON formatter too, so every line the process
    logs parses. ``quiet_uvicorn_access`` silences uvicorn's access line when the app writes
    its own (which carries the request ID), so each request is logged once.
    """
    root = logging.getLogger()
    for old in [handler for handler in root.handlers if isinstance(handler, _ServerHandler)]:
        root.removeHandler(old)
    if not root.handlers:
        ours = _ServerHandler()
        ours.setFormatter(formatter_for(log_format))
        root.addHandler(ours)
        root.setLevel(level.upper())
    if log_format == "json":
        for handler in logging.getLogger("uvicorn").handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("uvicorn.access").disabled = quiet_uvicorn_access
