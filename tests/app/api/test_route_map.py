"""A value per route found from the request head: plain paths by method and path, templates
by matching, nothing for a path or method no route takes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.route_map import RouteMap


def scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": ""}


def test_plain_paths_and_templates_by_method() -> None:
    router = APIRouter()
    router.add_api_route("/plain", lambda: None, methods=["POST"])
    router.add_api_route("/items/{name}/infer", lambda name: None, methods=["POST"])
    values = RouteMap(zip(router.routes, ["plain", "template"], strict=True))
    assert values.get(scope("POST", "/plain")) == "plain"
    assert values.get(scope("POST", "/items/x/infer")) == "template"
    assert values.get(scope("GET", "/plain")) is None  # a 405 needs no value
    assert values.get(scope("POST", "/items/x/y/infer")) is None
    assert values.get(scope("POST", "/other")) is None
