"""The path every inference endpoint shares: uploads -> decoding -> micro-batcher -> model,
under overload control.

Each request may wait ``REQUEST_TIMEOUT_S`` (or less when the client sends
``X-Request-Timeout``) in all to reach its model: for admission, for a decoding thread and
in its batcher's queue (its upload is not counted). A full batcher queue refuses it before
any decoding; a client that disconnects has its work cancelled. Each ends in a
``ShedError`` (503 with ``Retry-After``, or 499 for a client that is gone), counted by
reason. The pieces of that control live in ``app.api.overload``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import Receive, Scope

from app.api.deps import Pin, ServiceState, choose, pin_of, service_of
from app.api.errors import invalid_parameter
from app.api.numbers import MAX_DIGITS, whole_number
from app.api.overload.admission import MAX_TIMEOUT_CHARS, TIMEOUT_HEADER, asked_timeout
from app.api.overload.disconnect import unless_disconnected
from app.api.uploads import ModelInput, Upload, check_file_count, read_uploads, upload_openapi
from app.core import tracing
from app.core.deadline import Deadline
from app.core.errors import ShedError
from app.core.registry import ModelSet
from app.core.runtime import LoadedModel

T = TypeVar("T")


class InferenceRoute(APIRoute):
    """An inference endpoint: FastAPI documents it (the decorator's ``response_model``,
    ``responses`` and ``openapi_extra``) but does not run it. The endpoint takes the
    ``Request``, reads its parameters and form itself and returns its ``Response``: FastAPI's
    per-request dependency solving, form validation and response re-validation took about
    an eighth of the server's CPU per ``/classify`` request (docs/history/performance-history.md).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            try:
                return await endpoint(request)
            finally:
                await request.close()  # a parsed form's spooled files

        return handle


def json_response(body: BaseModel, headers: dict[str, str]) -> Response:
    """An inference endpoint's JSON answer, timed as its ``encode`` stage."""
    with tracing.stage("encode"):
        content = body.model_dump_json()
    return Response(content, media_type="application/json", headers=headers)


@dataclass(frozen=True)
class InferenceContext:
    """What an inference endpoint needs of its request."""

    service: ServiceState
    models: ModelSet  # read once: a hot swap during the request does not change them
    pin: Pin
    scope: Scope  # its extensions may hold the protocol's DisconnectNotice (app.api.overload)
    receive: Receive  # else this ASGI channel reports the client's disconnect
    deadline: Deadline

    def model(self, name: str) -> Any:
        """The version of ``name`` this request uses (503 or 404 when not loaded)."""
        return choose(self.service, self.models, name, self.pin)


# The parameters ``inference_context`` reads, documented for the OpenAPI schema.
MAX_LABEL_CHARS = 32
VERSION_MESSAGE = f"must be a whole number of at least 1, in at most {MAX_DIGITS} ASCII digits"
TIMEOUT_MESSAGE = (
    f"must be a finite number of seconds above 0, in at most {MAX_TIMEOUT_CHARS} ASCII "
    "characters (digits, a decimal point, an exponent)"
)
INFERENCE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "version",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 10**MAX_DIGITS - 1},
        "description": "Use this loaded version (see /models).",
    },
    {
        "name": "label",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": MAX_LABEL_CHARS},
        "description": "Use the version this label names, e.g. `stable`.",
    },
    {
        "name": TIMEOUT_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "number", "exclusiveMinimum": 0},
        "description": "Seconds this request may wait to reach its model before a 503 "
        "(at most, and by default, REQUEST_TIMEOUT_S), counted from its arrival; "
        f"at most {MAX_TIMEOUT_CHARS} ASCII characters.",
    },
]


def inference_openapi(
    body_description: str, several: bool, parameters: tuple[dict[str, Any], ...] = ()
) -> dict[str, Any]:
    """``openapi_extra`` of an inference endpoint: its body (a form of one ``file`` part, or
    ``several``, or one raw image), the parameters of ``INFERENCE_PARAMETERS`` and its own."""
    return {
        "requestBody": upload_openapi(body_description, several),
        "parameters": [*INFERENCE_PARAMETERS, *parameters],
    }


def request_pin(request: Request) -> Pin:
    """``?version=N`` or ``?label=NAME`` (422 when malformed, or when both are given)."""
    version, label = request.query_params.get("version"), request.query_params.get("label")
    number = None
    if version is not None:
        number = whole_number(version, minimum=1)
        if number is None:
            raise invalid_parameter("query", "version", version, VERSION_MESSAGE)
    if label is not None and len(label) > MAX_LABEL_CHARS:
        message = f"must have at most {MAX_LABEL_CHARS} characters"
        raise invalid_parameter("query", "label", label, message)
    return pin_of(number, label)


def check_timeout_header(request: Request) -> None:
    """422 for an ``X-Request-Timeout`` that ``asked_timeout`` refuses (the admission
    middleware has already applied a valid one)."""
    value = request.headers.get(TIMEOUT_HEADER)
    if value is not None and asked_timeout(value) is None:
        raise invalid_parameter("header", TIMEOUT_HEADER, value, TIMEOUT_MESSAGE)


async def inference_context(request: Request) -> InferenceContext:
    """The deadline starts now, with what was left of the request's time after it waited
    for admission."""
    service = service_of(request)
    pin = request_pin(request)
    check_timeout_header(request)
    deadline = request.state.budget.start()
    return InferenceContext(
        service, service.registry.current, pin, request.scope, request.receive, deadline
    )


async def run_model(
    context: InferenceContext,
    batcher_name: str,
    model: LoadedModel,
    signature: str,
    files: list[Upload],
) -> tuple[list[ModelInput], np.ndarray]:
    """Decode ``files`` for ``model`` and run them through ``signature`` in the named
    micro-batcher; returns the prepared inputs and one output row per file (with its OOD
    score where the version has one: see ``LoadedModel.inference_caller``)."""
    check_file_count(len(files), context.service.settings)
    work = _decode_and_run(context, batcher_name, model, signature, files)
    return await watched(context.service, batcher_name, context.scope, context.receive, work)


async def watched(
    service: ServiceState, batcher_name: str, scope: Scope, receive: Receive, work: Awaitable[T]
) -> T:
    """Await ``work`` (an inference request's decoding and model call), cancelled when the
    client disconnects; the ``ShedError`` it ends in is counted under ``batcher_name``."""
    try:
        return await unless_disconnected(scope, receive, work)
    except ShedError as error:
        service.metrics.shed.labels(batcher_name, error.reason).inc()
        raise


async def _decode_and_run(
    context: InferenceContext,
    batcher_name: str,
    model: LoadedModel,
    signature: str,
    files: list[Upload],
) -> tuple[list[ModelInput], np.ndarray]:
    service, deadline = context.service, context.deadline
    batcher = service.batchers[batcher_name]
    batcher.check_room(len(files))  # before any decoding is spent on it
    inputs = await read_uploads(
        files, service.settings, model.height, model.width, deadline, service.decode_pool
    )
    examples = np.stack([item.pixels for item in inputs])
    return inputs, await batcher.submit(model.inference_caller(signature), examples, deadline)
