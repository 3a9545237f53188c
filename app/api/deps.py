"""Request dependencies: the service state and the models a request uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.api.metrics import ServiceMetrics
from app.core.batching import MicroBatcher
from app.core.registry import ModelRegistry, ModelSet
from app.settings import Settings


@dataclass
class ServiceState:
    """Built once by the lifespan and kept on ``app.state.service``."""

    settings: Settings
    metrics: ServiceMetrics
    registry: ModelRegistry
    batchers: dict[str, MicroBatcher]
    device: str


async def get_service(request: Request) -> ServiceState:
    """Async so FastAPI calls it on the loop instead of hopping to the thread pool."""
    return request.app.state.service


async def get_models(request: Request) -> ModelSet:
    """Read once per request: a hot swap during the request does not change its models."""
    return (await get_service(request)).registry.current


ServiceDep = Annotated[ServiceState, Depends(get_service)]
ModelsDep = Annotated[ModelSet, Depends(get_models)]
