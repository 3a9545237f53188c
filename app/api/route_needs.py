"""What a route needs of the app around it, declared on the route's own endpoint
(``@needs(...)`` beside its ``@router.post(...)``). ``create_app`` reads the declarations of
every route it serves (``app.api.routers``) and builds the middlewares' inputs and the
micro-batchers from them, so adding an endpoint touches its own module (and the router list
of ``app/api/routers.py`` when it comes with a new router).

A route without a declaration takes no body, feeds no batcher and is behind the API key
with ``API_KEY_SCOPE=all``: only a route that says so is open (the probes, the page).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from app.api.middleware.limits import MULTIPART_OVERHEAD_BYTES
from app.settings import Settings

_ATTRIBUTE = "__route_needs__"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def _one(settings: Settings) -> int:
    return 1


def per_request(settings: Settings) -> int:
    """``MAX_FILES_PER_REQUEST``: the files one /classify request may carry."""
    return settings.max_files_per_request


@dataclass(frozen=True)
class Images:
    """Encoded images through the input gate (``app.api.uploads``): ``file`` parts of a
    form or one image as the raw body, at most ``files(settings)`` of them."""

    files: Callable[[Settings], int] = _one

    def body_limit(self, settings: Settings) -> int:
        """That many files' worth, at most ``MAX_REQUEST_BYTES``, plus the form's own bytes."""
        images = settings.max_upload_bytes * self.files(settings)
        return min(images, settings.max_request_bytes) + MULTIPART_OVERHEAD_BYTES


@dataclass(frozen=True)
class V2Tensors:
    """An Open Inference Protocol infer body (``app.api.v2.protocol``): at most as many encoded
    images as /classify takes, each after its 4-byte length, behind a small JSON header, or
    a JSON part of at most ``app.api.v2.models.max_json_bytes``. The route itself refuses,
    while streaming, any byte past what its checked JSON header announces."""

    def body_limit(self, settings: Settings) -> int:
        return Images(per_request).body_limit(settings)


Accepted = Images | V2Tensors


@dataclass(frozen=True)
class RouteNeeds:
    """``accepts``: what its body carries through the input gate, which sets its body limit
    (every other route gets ``DEFAULT_BODY_BYTES``). ``batchers``: the micro-batchers its
    handler submits to; the service builds one of each name. ``admitted_as``: when set,
    admission control admits it (app/api/overload) and counts its refusals under this
    batcher name. ``key_scope``: the ``API_KEY_SCOPE`` from which it needs ``X-API-Key``
    when ``API_KEY`` is set: ``admin`` (whatever the scope), ``all``, or None (never).
    ``operator``: named by the start-up warning when no ``API_KEY`` is set."""

    accepts: Accepted | None = None
    batchers: tuple[str, ...] = ()
    admitted_as: str | None = None
    key_scope: Literal["admin", "all"] | None = "all"
    operator: bool = False


OPEN = RouteNeeds(key_scope=None)  # the probes and the page
# Changes what the service serves: behind the key whenever API_KEY is set.
OPERATOR = RouteNeeds(key_scope="admin", operator=True)


def task_inference(batcher: str, accepts: Accepted) -> RouteNeeds:
    """A task inference endpoint: admitted, feeding ``batcher``."""
    return RouteNeeds(accepts=accepts, batchers=(batcher,), admitted_as=batcher)


def needs(declared: RouteNeeds) -> Callable[[Endpoint], Endpoint]:
    """Declare what the routes of the decorated endpoint need (every route it is registered
    for: the v2 infer endpoint serves two paths)."""

    def declare(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _ATTRIBUTE, declared)
        return endpoint

    return declare


def needs_of(route: BaseRoute) -> RouteNeeds | None:
    """The route's declaration (``RouteNeeds()`` when it has none); None for what is not a
    FastAPI endpoint, which needs nothing."""
    if not isinstance(route, APIRoute):
        return None
    declared = getattr(route.endpoint, _ATTRIBUTE, None)
    return declared if isinstance(declared, RouteNeeds) else RouteNeeds()


def _declared(routes: Iterable[BaseRoute]) -> list[tuple[BaseRoute, RouteNeeds]]:
    return [(route, declared) for route in routes if (declared := needs_of(route)) is not None]


def body_limits(routes: Iterable[BaseRoute], settings: Settings) -> list[tuple[BaseRoute, int]]:
    """The largest body of each route that accepts images or tensors."""
    return [
        (route, declared.accepts.body_limit(settings))
        for route, declared in _declared(routes)
        if declared.accepts is not None
    ]


def admitted(routes: Iterable[BaseRoute]) -> list[tuple[BaseRoute, str]]:
    """The routes admission control admits, with the name their refusals count under."""
    return [
        (route, declared.admitted_as)
        for route, declared in _declared(routes)
        if declared.admitted_as is not None
    ]


def batcher_names(routes: Iterable[BaseRoute]) -> tuple[str, ...]:
    """Every micro-batcher a route submits to, once each, in the order of the routes."""
    names = (name for _, declared in _declared(routes) for name in declared.batchers)
    return tuple(dict.fromkeys(names))


def guarded(routes: Iterable[BaseRoute], scope: Literal["admin", "all"]) -> list[BaseRoute]:
    """The routes behind the API key with ``API_KEY_SCOPE=scope``."""
    return [
        route
        for route, declared in _declared(routes)
        if declared.key_scope == "admin" or (declared.key_scope == "all" and scope == "all")
    ]


def operator_routes(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    return [route for route, declared in _declared(routes) if declared.operator]


def behind_key(router: APIRouter) -> bool:
    """Whether the router's routes may need the API key (so its OpenAPI operations document
    it); a router mixes no open routes with keyed ones, as the key is documented per router."""
    keyed = {declared.key_scope is not None for _, declared in _declared(router.routes)}
    if len(keyed) > 1:
        paths = sorted({getattr(route, "path", "") for route in router.routes})
        raise ValueError(f"a router mixes open routes and routes behind the API key: {paths}")
    return keyed == {True}
