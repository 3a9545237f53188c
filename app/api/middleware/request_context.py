"""Every request gets an ID, a trace record, the security headers (``headers``) and an
access-log line, in one outermost middleware (each middleware layer costs every request).

* ``X-Request-ID``: a caller's ID is kept when it is short and made of safe characters
  (``A-Z a-z 0-9 . _ ~ : / + = -``, at most 128), otherwise a fresh one replaces it. The ID is
  sent back on every response, and added as ``request_id`` to every JSON error body.
* The error bodies are completed here rather than in each producer, because several answer
  before any exception handler could run (the API-key 401 and the size 413 are middlewares,
  /readyz returns its 503 itself): one place covers all of them, and any added later. Only an
  error response (status >= 400) with a JSON object body is touched, and only when the body
  is small; success responses pass through unread. The one response sent outside this
  middleware, the 500 for an unhandled exception, adds the ID in its handler (app/api/errors.py).
* Tracing: the request's server span comes from FastAPI's own OpenTelemetry support
  (``fastapi_telemetry``), which joins an incoming W3C ``traceparent``; this middleware hands
  the app's tracer to the inference stages (app/core/tracing.py).
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time

from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from opentelemetry.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.middleware.access_log import access_fields, log_access
from app.api.middleware.headers import add_security_headers
from app.core import tracing

REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._~:/+=-]{1,128}")
_MAX_ERROR_BODY_BYTES = 64 * 1024
_W3C = TraceContextTextMapPropagator()
_PROCESS_PREFIX = secrets.token_hex(8)
_counter = itertools.count()


def accept_or_create(request_id: str | None) -> str:
    """The caller's ID when it is safe to echo and log, else a fresh one: 32 hex digits, a
    random prefix drawn once per process and a counter, unique across processes and
    restarts without a system call per request (the event loop's interpreter lock is
    contended; each call that releases it may wait to get it back)."""
    if request_id is not None and _SAFE_REQUEST_ID.fullmatch(request_id):
        return request_id
    return f"{_PROCESS_PREFIX}{next(_counter):016x}"


def request_id_of(request: Request) -> str:
    """The ID the middleware gave this request (a fresh one if it never ran)."""
    request_id = getattr(request.state, "request_id", None)
    return request_id if isinstance(request_id, str) else accept_or_create(None)


def fastapi_telemetry(tracer_provider: TracerProvider | None) -> TelemetryConfig:
    """``FastAPI(telemetry=...)``: server spans on our provider, or nothing at all.

    FastAPI's own metrics and log export stay off (Prometheus serves /metrics; logs go
    through the logging module), and so does its reading of ``OTEL_*`` variables: the
    settings alone decide whether anything is traced.
    """
    return {
        "tracing": tracer_provider is not None,
        "tracer_provider": tracer_provider,
        "metrics": False,
        "logs": False,
        "auto_configure": False,
    }


def with_request_id(body: bytes, request_id: str) -> bytes | None:
    """The JSON object ``body`` with ``request_id`` added; None when it is not one."""
    try:
        content = json.loads(body)
        if not isinstance(content, dict) or "request_id" in content:
            return None
        content["request_id"] = request_id
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()
    except ValueError:
        return None


def _trace_id(headers: Headers) -> str | None:
    """The current trace (when traced), else the caller's (a valid ``traceparent``)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid and "traceparent" in headers:
        span_context = trace.get_current_span(_W3C.extract(headers)).get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, tracer_provider: TracerProvider | None, access_log: bool
    ) -> None:
        self.app = app
        self.tracer = tracing.tracer_of(tracer_provider)
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        headers = Headers(scope=scope)
        request_id = accept_or_create(headers.get(REQUEST_ID_HEADER))
        request = tracing.RequestTrace(request_id, self.tracer)
        scope.setdefault("state", {})["request_id"] = request_id
        trace_id = _trace_id(headers) if self.access_log else None  # only logged
        status = 500  # what the client gets when the app raises before answering
        model_version: str | None = None
        held: Message | None = None  # the start of a JSON error, sent once its body is complete
        error_body = bytearray()

        async def send_with_id(message: Message) -> None:
            nonlocal status, model_version, held
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                response_headers = MutableHeaders(scope=message)
                response_headers[REQUEST_ID_HEADER] = request.request_id
                add_security_headers(response_headers, path)
                model_version = response_headers.get(MODEL_VERSION_HEADER)
                content_type = response_headers.get("content-type", "")
                if status >= 400 and content_type.startswith("application/json"):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                error_body.extend(message.get("body", b""))
                more_body = message.get("more_body", False)
                if more_body and len(error_body) <= _MAX_ERROR_BODY_BYTES:
                    return
                start, held = held, None
                body = bytes(error_body)
                small = not more_body and len(body) <= _MAX_ERROR_BODY_BYTES
                completed = with_request_id(body, request.request_id) if small else None
                if completed is not None:
                    body = completed
                    MutableHeaders(scope=start)["content-length"] = str(len(body))
                await send(start)
                message = {"type": "http.response.body", "body": body, "more_body": more_body}
            await send(message)

        token = tracing.begin(request)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            tracing.end(token)
            if self.access_log:
                duration_s = time.perf_counter() - started
                log_access(
                    access_fields(scope, request, status, duration_s, model_version, trace_id)
                )
