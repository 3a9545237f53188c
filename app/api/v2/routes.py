"""Open Inference Protocol (KServe v2) REST endpoints, beside the task endpoints.

Clients such as ``tritonclient.http`` and KServe's v2 client work unchanged. Inference goes
through the same micro-batchers as ``/classify`` and ``/denoise``, so both kinds of request
share model calls. Errors are ``{"error": ...}`` as the protocol says (never a 5xx for bad
input). See docs/v2-protocol.md.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from app.api.deps import MODEL_VERSION_HEADER, ModelsDep, ServiceDep, ServiceState, service_of
from app.api.errors import V2_PREFIX, error_response, retry_headers
from app.api.inference import InferenceRoute, check_timeout_header, watched
from app.api.numbers import whole_number
from app.api.route_needs import OPEN, RouteNeeds, V2Tensors, needs
from app.api.schemas import V2Error, V2ModelMetadata, V2ModelReady, V2ServerMetadata
from app.api.v2.models import (
    BATCHERS,
    MODELS,
    PLATFORM,
    max_json_bytes,
    model_batch,
    model_config,
    requested_outputs,
    tensor_limits,
    tensor_metadata,
)
from app.api.v2.protocol import (
    HEADER_LENGTH,
    InferBodyReader,
    InferRequest,
    encode_infer_response,
)
from app.core import tracing
from app.core.errors import ModelUnavailableError, NotFoundError, ServiceError
from app.core.registry import ModelSet
from app.core.runtime import LoadedModel, split_scores
from app.settings import Settings

SERVER_NAME = "cellsign"
# A JSON part up to this size is parsed on the event loop (a few ms at worst); a larger one,
# up to MAX_JSON_BYTES (about 0.1 s of CPU), on a worker thread, so the loop keeps serving.
INLINE_JSON_BYTES = 64 * 1024
EXTENSIONS = ["binary_tensor_data"]


def v2_error(
    message: str, status_code: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return error_response(V2_PREFIX, message, status_code, headers)


class V2Route(APIRoute):
    """Answers this router's errors as ``{"error": ...}`` instead of ``{"detail": ...}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as error:
                return v2_error(error.detail, error.status_code, retry_headers(error))
            except HTTPException as error:  # its headers: Connection: close for a 408/413
                return v2_error(str(error.detail), error.status_code, error.headers)
            except RequestValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}"
                    for problem in error.errors()
                )
                return v2_error(problems, 400)

        return handle


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": V2Error, "description": description}
    for code, description in (
        (400, "Malformed request or tensors that do not fit the model."),
        # as AUTH_ERRORS says for the other routes, in the protocol's shape
        (401, "Missing or wrong X-API-Key (only when API_KEY is set)."),
        (404, "Unknown model, or a version that is not loaded."),
        (503, "The model is not loaded (see /readyz)."),
    )
}

# Probes stay outside the API key, like /healthz and /readyz.
probes = APIRouter(route_class=V2Route, tags=["open inference protocol"])
router = APIRouter(route_class=V2Route, tags=["open inference protocol"], responses=_ERRORS)


@probes.get("/v2/health/live")
@needs(OPEN)
async def live() -> dict[str, bool]:
    """The process is up (even when no model could be loaded)."""
    return {"live": True}


@probes.get("/v2/health/ready", responses={503: {"model": V2Error}})
@needs(OPEN)
async def ready(service: ServiceDep) -> Response:
    """200 when every model serves (as /readyz); 503 naming what is missing otherwise."""
    missing = service.registry.missing()
    if missing:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in missing.items())
        return v2_error(f"not ready: {reasons}", 503)
    return JSONResponse({"ready": True})


@router.get("/v2", response_model=V2ServerMetadata)
async def server_metadata(request: Request) -> V2ServerMetadata:
    return V2ServerMetadata(name=SERVER_NAME, version=request.app.version, extensions=EXTENSIONS)


def _model(
    service: ServiceDep, models: ModelSet, name: str, version: str | None, canary: bool = False
) -> LoadedModel:
    """The version of ``name`` to use: 404 for an unknown model or unloaded version, 503 when
    none is loaded. Only inference without a version takes the canary share."""
    if name not in MODELS:
        raise NotFoundError(f"unknown model {name!r}; models: {', '.join(MODELS)}")
    pinned = None if version is None else whole_number(version, minimum=1)
    if version is not None and pinned is None:
        raise NotFoundError(
            f"{name} has no version {version[:32]!r}: versions are positive integers"
        )
    model = models.select(name, pinned, draw=random.random if canary else _never_canary)
    if model is None:
        raise ModelUnavailableError(service.registry.missing_reason(name))
    return model


def _never_canary() -> float:
    return 1.0


async def _metadata(
    service: ServiceDep, models: ModelsDep, name: str, version: str | None
) -> V2ModelMetadata:
    model = _model(service, models, name, version)
    inputs, outputs = tensor_metadata(model)
    return V2ModelMetadata(
        name=name,
        versions=[str(v) for v in models.versions[name].loaded],
        platform=PLATFORM,
        inputs=inputs,
        outputs=outputs,
    )


@router.get("/v2/models/{name}", response_model=V2ModelMetadata)
async def model_metadata(name: str, service: ServiceDep, models: ModelsDep) -> V2ModelMetadata:
    """Name, loaded versions, platform, and the input/output tensors of the default version."""
    return await _metadata(service, models, name, None)


@router.get("/v2/models/{name}/versions/{version}", response_model=V2ModelMetadata)
async def version_metadata(
    name: str, version: str, service: ServiceDep, models: ModelsDep
) -> V2ModelMetadata:
    return await _metadata(service, models, name, version)


@router.get("/v2/models/{name}/ready", response_model=V2ModelReady)
async def model_ready(name: str, service: ServiceDep, models: ModelsDep) -> V2ModelReady:
    """200 when the model serves; 503 (with the reason) when it is not loaded."""
    _model(service, models, name, None)
    return V2ModelReady(name=name, ready=True)


@router.get("/v2/models/{name}/versions/{version}/ready", response_model=V2ModelReady)
async def version_ready(
    name: str, version: str, service: ServiceDep, models: ModelsDep
) -> V2ModelReady:
    _model(service, models, name, version)
    return V2ModelReady(name=name, ready=True)


@router.get("/v2/models/{name}/config")
async def config(name: str, service: ServiceDep, models: ModelsDep) -> dict[str, Any]:
    """Triton's model-configuration extension, the part load generators read (perf_analyzer
    needs it): `max_batch_size` (MAX_FILES_PER_REQUEST), dynamic batching, optional inputs."""
    model = _model(service, models, name, None)
    return model_config(model, service.settings.max_files_per_request)


@router.get("/v2/models/{name}/versions/{version}/config")
async def version_config(
    name: str, version: str, service: ServiceDep, models: ModelsDep
) -> dict[str, Any]:
    model = _model(service, models, name, version)
    return model_config(model, service.settings.max_files_per_request)


class V2InferRoute(V2Route, InferenceRoute):
    """The infer endpoints: run directly, without FastAPI's per-request parameter solving
    (``InferenceRoute``), and answering errors the v2 way (``V2Route``)."""


# Admitted like the task endpoints; a request refused by admission, before its model (and so
# its outputs' batchers) is known, is counted under "v2".
INFER = RouteNeeds(accepts=V2Tensors(), batchers=BATCHERS, admitted_as="v2")


@needs(INFER)
async def infer(request: Request) -> Response:
    """Run the model on an `image` (BYTES, encoded files) or `images` (FP32 pixels) input;
    requests without a version take the canary share like the task endpoints.

    Admitted, decoded, given a deadline and dropped on a disconnect like the task endpoints'
    requests (app/api/inference.py)."""
    service = service_of(request)
    check_timeout_header(request)
    name, version = request.path_params["name"], request.path_params.get("version")
    model = _model(service, service.registry.current, name, version, canary=version is None)
    parsed = await _read_request(request, model, service.settings)
    if isinstance(parsed, Response):
        return parsed
    try:
        return await _infer(request, service, model, parsed)
    finally:
        parsed.close()  # spooled BYTES elements


async def _infer(
    request: Request, service: ServiceState, model: LoadedModel, parsed: InferRequest
) -> Response:
    """Decode, batch and run ``parsed`` once its body has been read and checked."""
    name = model.name
    outputs = requested_outputs(name, parsed)
    deadline = request.state.budget.start()  # now that the body has arrived

    async def run() -> list[tuple[str, Any, bool]]:
        batch = await model_batch(model, parsed, service.settings, deadline, service.decode_pool)
        # The task endpoints' callers, so v2 and task requests share micro-batches; v2
        # returns only the model's outputs, not the out-of-distribution score.
        return [
            (
                output.name,
                split_scores(
                    await service.batchers[output.batcher].submit(
                        model.inference_caller(output.signature), batch, deadline
                    )
                )[0],
                binary,
            )
            for output, binary in outputs
        ]

    # A refusal is counted under the first output's batcher.
    batcher_name = outputs[0][0].batcher
    results = await watched(service, batcher_name, request.scope, request.receive, run())
    with tracing.stage("encode"):
        body, headers = encode_infer_response(name, model.version, parsed.id, results)
    return Response(body, headers={**headers, MODEL_VERSION_HEADER: str(model.version)})


async def _read_request(
    request: Request, model: LoadedModel, settings: Settings
) -> InferRequest | Response:
    """The request, read as it streams in and refused as soon as what has arrived breaks a
    limit (``InferBodyReader``): a body is never held beyond its checked JSON part and the
    binary size that part announced. A refusal before the body's end closes the connection,
    as its unread rest cannot be told from a next request."""
    with tracing.stage("read"):
        try:
            reader = InferBodyReader(
                request.headers.get(HEADER_LENGTH),
                request.headers.get("content-length"),
                max_json_bytes(settings),
                tensor_limits(model, settings),
            )
        except ServiceError as error:
            return v2_error(error.detail, error.status_code, {"Connection": "close"})
        large_header = (reader.json_size or 0) > INLINE_JSON_BYTES
        try:
            async for chunk in request.stream():
                if large_header and reader.parses_with(len(chunk)):
                    await to_thread.run_sync(reader.feed, chunk)
                else:
                    reader.feed(chunk)
            # An all-JSON body is parsed here, and a JSON tensor read.
            if reader.json_bytes > INLINE_JSON_BYTES:
                return await to_thread.run_sync(reader.finish)
            return reader.finish()
        except ServiceError as error:
            reader.close()
            return v2_error(error.detail, error.status_code, {"Connection": "close"})
        except BaseException:
            reader.close()
            raise


def _path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_INFER_BODY = {
    "description": "An Open Inference Protocol request: JSON, or with the binary tensor "
    "extension a JSON header (length in `Inference-Header-Content-Length`) then raw tensors.",
    "content": {"application/json": {}, "application/octet-stream": {}},
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The outputs: JSON, or a JSON header and binary tensors when asked.",
        "content": {"application/json": {}, "application/octet-stream": {}},
    },
    413: {
        "model": V2Error,
        "description": "Too many images or pixels, too much JSON, an image over "
        "MAX_UPLOAD_BYTES, or a body longer than its JSON header announces.",
    },
    415: {"model": V2Error, "description": "A BYTES element is not a supported image."},
}


def _add_infer_route(path: str, name: str, parameters: list[str]) -> None:
    router.add_api_route(
        path,
        infer,
        methods=["POST"],
        name=name,
        openapi_extra={
            "requestBody": _INFER_BODY,
            "parameters": [_path_parameter(parameter) for parameter in parameters],
        },
        responses=_INFER_RESPONSES,
        route_class_override=V2InferRoute,
    )


_add_infer_route("/v2/models/{name}/infer", "infer", ["name"])
_add_infer_route("/v2/models/{name}/versions/{version}/infer", "infer_version", ["name", "version"])
