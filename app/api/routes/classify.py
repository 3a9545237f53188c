"""POST /classify: SIGNS hand gestures -> digit, one prediction per uploaded file."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile

from app.api.deps import MODEL_VERSION_HEADER
from app.api.inference import InferenceDep, inference_openapi, run_model
from app.api.ood import assess
from app.api.routes import UPLOAD_ERRORS
from app.api.schemas import ClassifyResponse, ModelRef, Prediction
from app.api.uploads import request_uploads
from app.core.registry import CLASSIFIER
from contract.signatures import CLASSIFY

router = APIRouter(tags=["inference"])


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=UPLOAD_ERRORS,
    openapi_extra=inference_openapi(
        "A form with one or several `file` parts, or one image as the raw body."
    ),
)
async def classify(
    request: Request,
    response: Response,
    inference: InferenceDep,
    files: Annotated[
        list[UploadFile] | None,
        File(alias="file", description="One image, or several: repeat the `file` field."),
    ] = None,
) -> ClassifyResponse:
    """Classify each uploaded image (any common format; resized to the model's input).

    ``in_distribution`` says whether the image looks like a SIGNS hand gesture at all.
    """
    service = inference.service
    model = inference.model(CLASSIFIER)
    response.headers[MODEL_VERSION_HEADER] = str(model.version)
    uploads = await request_uploads(request, files, service.settings)
    inputs, rows = await run_model(inference, "classify", model, CLASSIFY, uploads)
    rows, verdicts = assess(service, model, [item.filename for item in inputs], rows)
    class_names: list[str] = model.metadata["class_names"]
    predictions = []
    for item, probabilities, verdict in zip(inputs, rows, verdicts, strict=True):
        class_id = int(probabilities.argmax())
        predictions.append(
            Prediction(
                filename=item.filename,
                label=class_names[class_id],
                class_id=class_id,
                confidence=float(probabilities[class_id]),
                probabilities={
                    name: float(p) for name, p in zip(class_names, probabilities, strict=True)
                },
                ood_score=verdict.ood_score,
                in_distribution=verdict.in_distribution,
            )
        )
    return ClassifyResponse(
        model=ModelRef(name=model.name, version=model.version), predictions=predictions
    )
