"""Schemathesis fuzzes every operation of our own OpenAPI schema on the real quick models.

Requests are generated from the schema: valid ones (positive mode) and deliberately invalid
ones (negative mode: wrong types, missing fields, bad headers). None may get a 5xx, and every
response must match what the schema documents: status code, content type and body schema.
A second deployment has ``API_KEY_SCOPE=all``: there every request without the key must be
refused with the documented 401.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks
from schemathesis.python.asgi import shutdown_lifespans

from app.api.overload.admission import TIMEOUT_HEADER, asked_timeout
from app.main import create_app
from app.settings import Settings
from tests.app.helpers import settings_for
from tests.app.model_files import copy_models
from tests.app.samples import image_bytes

CONFORMANCE = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
EXAMPLES = settings(
    max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
API_KEY = "fuzz-key"


def documented_operations() -> dict[tuple[str, str], dict[str, Any]]:
    """``(method, path) -> operation`` from the schema (building it needs no models)."""
    paths = create_app(Settings(model_dir=Path("unused"))).openapi()["paths"]
    return {
        (method.upper(), path): operation
        for path, item in sorted(paths.items())
        for method, operation in item.items()
    }


OPERATIONS = documented_operations()
GUARDED = [
    pytest.param(method, path, id=f"{method} {path}")
    for (method, path), operation in OPERATIONS.items()
    if "security" in operation
]
UPLOADS = [
    pytest.param(method, path, id=f"{method} {path}")
    for (method, path), operation in OPERATIONS.items()
    if "multipart/form-data" in operation.get("requestBody", {}).get("content", {})
]


def fuzz_targets() -> list[Any]:
    """Both modes for every operation, except negative mode where there is nothing to break."""
    targets = []
    for (method, path), operation in OPERATIONS.items():
        breakable = any(operation.get(key) for key in ("parameters", "requestBody", "security"))
        modes = list(GenerationMode) if breakable else [GenerationMode.POSITIVE]
        targets += [
            pytest.param(method, path, mode, id=f"{method} {path} {mode}") for mode in modes
        ]
    return targets


def schema_of(model_dir: Path, **overrides: Any) -> Iterator[schemathesis.BaseSchema]:
    """The schema as the running app serves it; schemathesis runs the app's lifespan."""
    app = create_app(settings_for(model_dir, max_upload_bytes=100_000, **overrides))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()  # stop the app's batchers now rather than at interpreter exit


def with_time_to_run(case: schemathesis.Case) -> None:
    """A valid but tiny ``X-Request-Timeout`` (say 5e-324 s) is rightly answered with the
    documented overload 503 (tests/app/test_overload.py); give every valid generated value
    time enough to run, and leave invalid ones to be refused with a 422."""
    value = (case.headers or {}).get(TIMEOUT_HEADER)
    if value is not None and asked_timeout(value) is not None:
        case.headers[TIMEOUT_HEADER] = "60"  # type: ignore[index]


def every_case_conforms(strategy: Any) -> None:
    """Send every request ``strategy`` generates; each response must pass ``CONFORMANCE``."""

    @EXAMPLES
    @given(case=strategy)
    def fuzz(case: schemathesis.Case) -> None:
        with_time_to_run(case)
        case.call_and_validate(checks=CONFORMANCE)

    fuzz()


@pytest.fixture(scope="module")
def fuzzed_models(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: the fuzzed admin endpoints may write labels.json into it."""
    return copy_models(quick_models, tmp_path_factory.mktemp("fuzz") / "models")


@pytest.fixture(scope="module")
def open_schema(fuzzed_models: Path) -> Iterator[schemathesis.BaseSchema]:
    yield from schema_of(fuzzed_models)


@pytest.fixture(scope="module")
def keyed_schema(fuzzed_models: Path) -> Iterator[schemathesis.BaseSchema]:
    yield from schema_of(fuzzed_models, api_key=API_KEY, api_key_scope="all")


@pytest.mark.parametrize(("method", "path", "mode"), fuzz_targets())
def test_no_server_error_and_every_response_matches_the_schema(
    open_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    every_case_conforms(open_schema[path][method].as_strategy(mode))


@pytest.mark.parametrize("media_type", ["multipart/form-data", "image/png"])
@pytest.mark.parametrize(("method", "path"), UPLOADS)
def test_real_image_with_any_documented_parameters_matches_the_schema(
    open_schema: schemathesis.BaseSchema, method: str, path: str, media_type: str
) -> None:
    """Generated bodies are random bytes (415); here the query parameters are generated
    around a real image, as a form part or as the raw body, so the 200 answers are checked
    against the schema too."""
    image = image_bytes()
    body: Any = image
    if media_type == "multipart/form-data":
        body = {"file": [image] if path == "/classify" else image}  # /classify takes a list
    strategy = open_schema[path][method].as_strategy(body=body, media_type=media_type)
    every_case_conforms(strategy)


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_without_the_key_every_guarded_operation_is_a_documented_401(
    keyed_schema: schemathesis.BaseSchema, method: str, path: str
) -> None:
    operation = keyed_schema[path][method]

    @settings(EXAMPLES, max_examples=5)
    @given(case=operation.as_strategy(GenerationMode.POSITIVE))
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=CONFORMANCE, headers={"X-API-Key": "wrong"})
        assert response.status_code == 401

    fuzz()
