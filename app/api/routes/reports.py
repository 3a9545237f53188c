"""GET /models/{name}/report and /models/{name}/report/{file}: the serving version's report.

Training writes the plots and numbers (learning curves, confusion matrix, reliability
diagram, denoising grids, code map, OOD score histograms...) beside each model; these
routes let people see them for the version that actually answers their requests.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from app.api.deps import ModelsDep, ServiceDep
from app.api.schemas import ErrorResponse, ReportFileRef, ReportResponse
from app.core.errors import ModelUnavailableError
from app.core.registry import AUTOENCODER, CLASSIFIER, COMPONENTS, INDEX, ModelSet
from app.core.reports import find_report_file, list_report
from contract.metadata import VersionMetadata, schema_for

router = APIRouter(tags=["operations"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such model or report file."},
    503: {"model": ErrorResponse, "description": "The model is not loaded (see /readyz)."},
}


def _serving(models: ModelSet, service: ServiceDep, name: str) -> tuple[Any, VersionMetadata]:
    """(version folder holder, metadata) of the version of ``name`` that serves now."""
    if name not in COMPONENTS:
        raise HTTPException(404, detail=f"no model named {name!r}; one of {', '.join(COMPONENTS)}")
    serving = {CLASSIFIER: models.classifier, AUTOENCODER: models.autoencoder, INDEX: models.index}
    model = serving[name]
    if model is None:
        raise ModelUnavailableError(service.registry.missing_reason(name))
    # The models hold their schema's object already; the index holds its fields as a dict.
    return model, schema_for(name).model_validate(model.metadata)


@router.get("/models/{name}/report", response_model=ReportResponse, responses=_ERRORS)
async def report(name: str, service: ServiceDep, models: ModelsDep) -> ReportResponse:
    """The report files (with URLs) and the metrics of the serving version of ``name``."""
    model, metadata = _serving(models, service, name)
    files = [
        ReportFileRef(
            name=item.name,
            url=f"/models/{name}/report/{item.name}",
            content_type=item.content_type,
            bytes=item.size,
        )
        for item in list_report(model.folder)
    ]
    return ReportResponse(name=name, version=model.version, files=files, **metadata.report())


@router.get(
    "/models/{name}/report/{file}",
    response_class=FileResponse,
    responses={
        **_ERRORS,
        200: {"content": {"image/png": {}, "application/json": {}}, "description": "The file."},
    },
)
async def report_file(name: str, file: str, service: ServiceDep, models: ModelsDep) -> FileResponse:
    """One file of the serving version's report, by a name from the listing."""
    model, _ = _serving(models, service, name)
    item = find_report_file(model.folder, file)
    if item is None:
        raise HTTPException(
            404, detail=f"{name} version {model.version} has no report file {file!r}"
        )
    return FileResponse(item.path, media_type=item.content_type)
