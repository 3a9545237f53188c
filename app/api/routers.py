"""The routers the app serves, in the order requests are matched against them: a new
router goes here; what its routes need, they declare themselves (``app.api.route_needs``)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.routing import BaseRoute

from app.api.routes import admin, classify, denoise, gallery, health, info, page, reports, similar
from app.api.v2 import routes as v2

# The inference routes (most of the traffic) come first.
ROUTERS: tuple[APIRouter, ...] = (
    classify.router,
    denoise.router,
    similar.router,
    gallery.router,
    info.router,
    reports.router,
    v2.router,
    admin.router,
    gallery.writes,
    health.router,
    v2.probes,
    page.router,
)


def served_routes() -> list[BaseRoute]:
    """Every route of ``ROUTERS``, each with its declaration (``app.api.route_needs``). Read
    from the routers, not from ``app.routes``, where FastAPI keeps each included router as
    one entry."""
    return [route for router in ROUTERS for route in router.routes]
