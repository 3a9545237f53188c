"""POST /denoise: a malaria cell through the autoencoder, returned as PNG (or JSON)."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Header, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import MODEL_VERSION_HEADER
from app.api.inference import InferenceDep, inference_openapi, run_model
from app.api.ood import Verdict, assess
from app.api.routes import UPLOAD_ERRORS
from app.api.schemas import DenoiseResponse, ModelRef
from app.api.uploads import request_uploads, require_one_file
from app.core import tracing
from app.core.imaging import fit_within, to_png
from app.core.registry import AUTOENCODER
from contract.signatures import DENOISE

router = APIRouter(tags=["inference"])

_RESPONSES = {
    **UPLOAD_ERRORS,
    200: {
        "description": "The denoised cell: PNG by default, JSON with `Accept: application/json`.",
        "model": DenoiseResponse,
        "content": {"image/png": {}},
    },
}


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
    dependencies=[Depends(require_one_file)],
    openapi_extra=inference_openapi("A form with one `file` part, or the image as the raw body."),
)
async def denoise(
    request: Request,
    inference: InferenceDep,
    file: Annotated[UploadFile | None, File(description="One image of a cell.")] = None,
    size: Annotated[
        Literal["model", "original"],
        Query(
            description="`model`: the model's input size; `original`: the upload's size, "
            "scaled down to fit DENOISE_MAX_SIDE (1024 px by default) when larger."
        ),
    ] = "model",
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Reconstruct the cell with the autoencoder, which removes noise it never learned.

    Whether the upload looks like a blood-smear cell: ``in_distribution`` in JSON, the
    ``X-In-Distribution`` and ``X-OOD-Score`` headers on the PNG.
    """
    service = inference.service
    model = inference.model(AUTOENCODER)
    uploads = await request_uploads(request, None if file is None else [file], service.settings)
    (item,), rows = await run_model(inference, "denoise", model, DENOISE, uploads)
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
        if prefers_json(accept):
            body = DenoiseResponse(
                model=ModelRef(name=model.name, version=model.version),
                width=width,
                height=height,
                image_base64=base64.b64encode(png).decode("ascii"),
                ood_score=verdict.ood_score,
                in_distribution=verdict.in_distribution,
            )
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
