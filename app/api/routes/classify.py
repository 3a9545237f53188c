"""POST /classify: an image -> one of the served version's classes (SIGNS digits by default; a
version trained on class folders answers with their names), one prediction per file."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import MODEL_VERSION_HEADER
from app.api.inference import (
    InferenceRoute,
    inference_context,
    inference_openapi,
    json_response,
    run_model,
)
from app.api.ood import assess
from app.api.route_needs import Images, needs, per_request, task_inference
from app.api.routes import UPLOAD_ERRORS
from app.api.schemas import ClassifyResponse, ModelRef, Prediction
from app.api.uploads import request_uploads
from app.core.registry import CLASSIFIER
from contract.signatures import CLASSIFY

router = APIRouter(tags=["inference"], route_class=InferenceRoute)
BATCHER = "classify"


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=UPLOAD_ERRORS,
    openapi_extra=inference_openapi(
        "A form with one or several `file` parts (repeat the field), or one image as the raw body.",
        several=True,
    ),
)
@needs(task_inference(BATCHER, Images(per_request)))
async def classify(request: Request) -> Response:
    """Classify each uploaded image (any common format; resized to the model's input).

    ``in_distribution`` says whether the image looks like a SIGNS hand gesture at all.
    """
    inference = await inference_context(request)
    service = inference.service
    model = inference.model(CLASSIFIER)
    uploads = await request_uploads(request, service.settings, several=True)
    inputs, rows = await run_model(inference, BATCHER, model, CLASSIFY, uploads)
    rows, verdicts = assess(service, model, [item.filename for item in inputs], rows)
    class_names = model.metadata.class_names
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
    body = ClassifyResponse(
        model=ModelRef(name=model.name, version=model.version), predictions=predictions
    )
    return json_response(body, {MODEL_VERSION_HEADER: str(model.version)})
