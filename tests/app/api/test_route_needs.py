"""Routes declare what they need, and the app is assembled from the declarations alone: a
route added with a declaration gets its body limit, API key, admission and batcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI

from app.api import route_needs
from app.api.middleware.auth import ApiKeyMiddleware
from app.api.middleware.limits import MULTIPART_OVERHEAD_BYTES, RequestBodyLimitMiddleware
from app.api.overload.admission import AdmissionMiddleware
from app.api.route_needs import (
    OPEN,
    OPERATOR,
    Images,
    RouteNeeds,
    V2Tensors,
    needs,
    per_request,
    task_inference,
)
from app.api.routers import ROUTERS, served_routes
from app.main import create_app
from app.settings import Settings
from tests.app.helpers import settings_for

SETTINGS = Settings(max_upload_bytes=1000, max_files_per_request=5, max_request_bytes=3000)


def example_router() -> APIRouter:
    router = APIRouter()

    @router.post("/one")
    @needs(task_inference("first", Images()))
    async def one() -> None: ...

    @router.post("/many/{name}")
    @needs(RouteNeeds(accepts=Images(per_request), batchers=("first", "second")))
    async def many(name: str) -> None: ...

    @router.put("/change")
    @needs(OPERATOR)
    async def change() -> None: ...

    @router.get("/read")
    async def read() -> None: ...

    return router


def by_path(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    return {route.path: value for route, value in pairs}


def paths(routes: list[Any]) -> set[str]:
    return {route.path for route in routes}


def test_the_middlewares_inputs_follow_from_the_declarations() -> None:
    routes = example_router().routes
    one_file = 1000 + MULTIPART_OVERHEAD_BYTES
    capped = 3000 + MULTIPART_OVERHEAD_BYTES  # five files' worth, capped by MAX_REQUEST_BYTES
    assert by_path(route_needs.body_limits(routes, SETTINGS)) == {
        "/one": one_file,
        "/many/{name}": capped,
    }
    assert by_path(route_needs.admitted(routes)) == {"/one": "first"}
    assert route_needs.batcher_names(routes) == ("first", "second")
    assert paths(route_needs.guarded(routes, "admin")) == {"/change"}
    # Undeclared routes are behind the key with API_KEY_SCOPE=all, like every declared one
    # that does not say otherwise.
    assert paths(route_needs.guarded(routes, "all")) == {"/one", "/many/{name}", "/change", "/read"}
    assert paths(route_needs.operator_routes(routes)) == {"/change"}


def test_v2_bodies_take_what_classify_takes() -> None:
    assert V2Tensors().body_limit(SETTINGS) == Images(per_request).body_limit(SETTINGS)


def test_open_routes_are_never_behind_the_key_and_a_router_does_not_mix_them() -> None:
    probes = APIRouter()

    @probes.get("/alive")
    @needs(OPEN)
    async def alive() -> None: ...

    assert route_needs.guarded(probes.routes, "all") == []
    assert not route_needs.behind_key(probes)
    assert route_needs.behind_key(example_router())

    @probes.get("/secret")
    async def secret() -> None: ...

    with pytest.raises(ValueError, match="mixes open routes"):
        route_needs.behind_key(probes)


def test_one_endpoint_declares_for_each_of_its_routes() -> None:
    router = APIRouter()

    @needs(task_inference("v", Images()))
    async def infer() -> None: ...

    router.add_api_route("/a/{x}", infer, methods=["POST"])
    router.add_api_route("/b/{x}/{y}", infer, methods=["POST"])
    assert set(by_path(route_needs.admitted(router.routes)).items()) == {
        ("/a/{x}", "v"),
        ("/b/{x}/{y}", "v"),
    }


def middleware_options(app: FastAPI, middleware: type) -> dict[str, Any]:
    (found,) = [entry for entry in app.user_middleware if entry.cls is middleware]
    return found.kwargs


def test_create_app_assembles_the_served_routes_declarations(tmp_path: Path) -> None:
    """The served routes' own declarations, and nothing else, reach the middlewares."""
    settings = settings_for(tmp_path, api_key="k", gallery_max_files=3, max_upload_bytes=1000)
    app = create_app(settings)
    admitted = middleware_options(app, AdmissionMiddleware)["admitted"]
    assert set(by_path(admitted).items()) == {
        ("/classify", "classify"),
        ("/denoise", "denoise"),
        ("/similar", "encode"),
        ("/v2/models/{name}/infer", "v2"),
        ("/v2/models/{name}/versions/{version}/infer", "v2"),
    }
    limits = by_path(middleware_options(app, RequestBodyLimitMiddleware)["body_limits"])
    assert limits["/gallery"] == 3 * settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    assert limits["/denoise"] == settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    guarded = middleware_options(app, ApiKeyMiddleware)["guarded_routes"]
    assert paths(guarded) == {
        "/admin/reload",
        "/admin/models/{name}/labels/{label}",
        "/admin/rollback/{name}",
        "/gallery",
        "/gallery/{item_id}",
    }
    gallery_writes = {(route.path, *route.methods) for route in guarded if "gallery" in route.path}
    assert gallery_writes == {("/gallery", "POST"), ("/gallery/{item_id}", "DELETE")}
    served = served_routes()
    assert route_needs.batcher_names(served) == ("classify", "denoise", "encode")
    open_paths = {route.path for route in served} - paths(route_needs.guarded(served, "all"))
    assert open_paths == {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/"}
    assert len(served) == sum(len(router.routes) for router in ROUTERS)
