"""POST /denoise: a malaria cell through the autoencoder, returned as PNG (or JSON)."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import MODEL_VERSION_HEADER
from app.api.errors import invalid_parameter
from app.api.inference import (
    InferenceRoute,
    inference_context,
    inference_openapi,
    run_model,
)
from app.api.ood import Verdict, assess
from app.api.route_needs import Images, needs, task_inference
from app.api.routes import UPLOAD_ERRORS
from app.api.schemas import DenoiseResponse, ModelRef
from app.api.uploads import request_uploads
from app.core import tracing
from app.core.imaging import fit_within, to_png
from app.core.registry import AUTOENCODER
from contract.signatures import DENOISE

router = APIRouter(tags=["inference"], route_class=InferenceRoute)
BATCHER = "denoise"

SIZES = ("model", "original")
SIZE_PARAMETER = {
    "name": "size",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": list(SIZES), "default": "model"},
    "description": "`model`: the model's input size; `original`: the upload's size, scaled "
    "down to fit DENOISE_MAX_SIDE (1024 px by default) when larger.",
}

_RESPONSES = {
    **UPLOAD_ERRORS,
    200: {
        "description": "The denoised cell: PNG by default, JSON with `Accept: application/json`.",
        "model": DenoiseResponse,
        "content": {"image/png": {}},
    },
}


def size_asked(request: Request) -> str:
    """``?size=``: ``model`` when absent, 422 unless one of ``SIZES``."""
    size = request.query_params.get("size", "model")
    if size not in SIZES:
        raise invalid_parameter("query", "size", size, f"must be one of {', '.join(SIZES)}")
    return size


def prefers_json(accept: str | None) -> bool:
    """True when the Accept header names application/json before image/png."""
    for media_range in (accept or "").split(","):
        media_type = media_range.split(";")[0].strip().lower()
        if media_type == "application/json":
            return True
        if media_type in ("image/png", "image/*"):
            return False
    return False


@router.post(
    "/denoise",
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra=inference_openapi(
        "A form with one `file` part, or the image as the raw body.",
        several=False,
        parameters=(SIZE_PARAMETER,),
    ),
)
@needs(task_inference(BATCHER, Images()))
async def denoise(request: Request) -> Response:
    """Reconstruct the cell with the autoencoder, which removes noise it never learned.

    Whether the upload looks like a blood-smear cell: ``in_distribution`` in JSON, the
    ``X-In-Distribution`` and ``X-OOD-Score`` headers on the PNG.
    """
    inference = await inference_context(request)
    service = inference.service
    size = size_asked(request)
    model = inference.model(AUTOENCODER)
    uploads = await request_uploads(request, service.settings, several=False)
    (item,), rows = await run_model(inference, BATCHER, model, DENOISE, uploads)
    (output,), (verdict,) = assess(service, model, [item.filename], rows)
    output_size = (
        fit_within(item.original_size, service.settings.denoise_max_side)
        if size == "original"
        else (model.width, model.height)
    )
    width, height = output_size
    headers = {MODEL_VERSION_HEADER: str(model.version)}
    with tracing.stage("encode"):
        png = await run_in_threadpool(to_png, output, output_size)
        if prefers_json(request.headers.get("accept")):
            body = DenoiseResponse(
                model=ModelRef(name=model.name, version=model.version),
                width=width,
                height=height,
                image_base64=base64.b64encode(png).decode("ascii"),
                ood_score=verdict.ood_score,
                in_distribution=verdict.in_distribution,
            )
            # inside this encode stage already, so not json_response (which times its own)
            return Response(body.model_dump_json(), media_type="application/json", headers=headers)
    return Response(png, media_type="image/png", headers={**headers, **verdict_headers(verdict)})


def verdict_headers(verdict: Verdict) -> dict[str, str]:
    """The PNG answer's place for the OOD fields: ``X-OOD-Score`` and ``X-In-Distribution``."""
    if verdict.ood_score is None:
        return {}
    return {
        "X-OOD-Score": f"{verdict.ood_score:.6g}",
        "X-In-Distribution": "true" if verdict.in_distribution else "false",
    }
