"""Metric labels stay bounded whatever a client sends."""

from __future__ import annotations

import re

import httpx
import pytest

from app.api.middleware.request_metrics import KNOWN_METHODS, method_label

pytestmark = pytest.mark.anyio


def label_values(exposition: str, label: str) -> set[str]:
    return set(re.findall(rf'^cellsign_requests_total{{.*{label}="([^"]*)"', exposition, re.M))


async def test_unknown_methods_and_paths_share_one_label_each(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await client.request(f"BREW{n}", f"/coffee/{n}")
        await client.get(f"/no/such/page/{n}")
    exposition = (await client.get("/metrics")).text
    methods = label_values(exposition, "method")
    assert "other" in methods
    assert methods <= KNOWN_METHODS | {"other"}
    endpoints = label_values(exposition, "endpoint")
    assert "unmatched" in endpoints
    assert not any(endpoint.startswith(("/coffee", "/no/such")) for endpoint in endpoints)


def test_method_label_keeps_the_standard_methods() -> None:
    assert [method_label(m) for m in ("GET", "POST", "get", "PROPFIND")] == [
        "GET",
        "POST",
        "other",
        "other",
    ]
