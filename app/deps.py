"""Request dependencies: the service state, the models a request uses, the API-key check."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from app.batching import MicroBatcher
from app.metrics import ServiceMetrics
from app.registry import ModelRegistry, ModelSet
from app.settings import Settings


@dataclass
class ServiceState:
    """Built once by the lifespan and kept on ``app.state.service``."""

    settings: Settings
    metrics: ServiceMetrics
    registry: ModelRegistry
    batchers: dict[str, MicroBatcher]
    device: str


def get_service(request: Request) -> ServiceState:
    return request.app.state.service


def get_models(request: Request) -> ModelSet:
    """Read once per request: a hot swap during the request does not change its models."""
    return get_service(request).registry.current


ServiceDep = Annotated[ServiceState, Depends(get_service)]
ModelsDep = Annotated[ModelSet, Depends(get_models)]


API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="Needed for /admin/* when API_KEY is set, and everywhere but the probes "
    "when API_KEY_SCOPE=all.",
)
ApiKeyDep = Annotated[str | None, Security(API_KEY_HEADER)]


def require_api_key(request: Request, x_api_key: ApiKeyDep) -> None:
    """401 unless the X-API-Key header matches API_KEY (no check when API_KEY is unset)."""
    expected = get_service(request).settings.api_key
    if expected is None:
        return
    if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong X-API-Key header",
            headers={"WWW-Authenticate": "X-API-Key"},
        )


def require_api_key_when_scope_all(request: Request, x_api_key: ApiKeyDep) -> None:
    if get_service(request).settings.api_key_scope == "all":
        require_api_key(request, x_api_key)
