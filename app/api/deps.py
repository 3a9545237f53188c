"""Request dependencies: the service state (``app.api.service_state``) and the models a
request uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from app.api.service_state import ServiceState
from app.core.errors import ModelUnavailableError
from app.core.registry import ModelSet


def service_of(request: Request) -> ServiceState:
    return request.app.state.service


async def get_service(request: Request) -> ServiceState:
    """Async so FastAPI calls it on the loop instead of hopping to the thread pool."""
    return service_of(request)


async def get_models(request: Request) -> ModelSet:
    """Read once per request: a hot swap during the request does not change its models."""
    return service_of(request).registry.current


@dataclass(frozen=True)
class Pin:
    """Which version a request asks for: a number, a label, or neither (the default, or
    the canary for its share of requests)."""

    version: int | None = None
    label: str | None = None


def pin_of(version: int | None, label: str | None) -> Pin:
    if version is not None and label is not None:
        raise HTTPException(422, detail="give either version or label, not both")
    return Pin(version, label)


def choose(service: ServiceState, models: ModelSet, name: str, pin: Pin) -> Any:
    """The version of ``name`` this request uses: 503 when none is loaded, 404 when the
    pinned version or label is not loaded."""
    model = models.select(name, pin.version, pin.label)
    if model is None:
        raise ModelUnavailableError(service.registry.missing_reason(name))
    return model


ServiceDep = Annotated[ServiceState, Depends(get_service)]
ModelsDep = Annotated[ModelSet, Depends(get_models)]

MODEL_VERSION_HEADER = "X-Model-Version"
INDEX_VERSION_HEADER = "X-Index-Version"
