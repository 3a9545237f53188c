"""A value per route, found for a request before the router runs (by a middleware, on the
request head), as the router would find its route."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

V = TypeVar("V")


class RouteMap(Generic[V]):
    """Plain paths by dictionary (one lookup for ``/classify``, the bulk of the traffic),
    templates such as ``/v2/models/{name}/infer`` by matching, method included."""

    def __init__(self, values: Iterable[tuple[BaseRoute, V]]) -> None:
        self.plain: dict[tuple[str, str], V] = {}
        self.templates: list[tuple[BaseRoute, V]] = []
        for route, value in values:
            if isinstance(route, Route) and route.methods and not route.param_convertors:
                self.plain |= {(method, route.path): value for method in route.methods}
            else:
                self.templates.append((route, value))

    def get(self, scope: Scope) -> V | None:
        """The value of the route an HTTP request's method and path match, else None."""
        value = self.plain.get((scope["method"], scope["path"]))
        if value is not None:
            return value
        for route, value in self.templates:
            if route.matches(scope)[0] == Match.FULL:
                return value
        return None
