"""Settings come from upper-case environment variables and refuse contradictions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import MAX_DEFAULT_WORKERS, Settings


def test_environment_variables_are_the_upper_case_field_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        "MODEL_DIR": "/srv/models",
        "DEVICE": "cpu",
        "MAX_UPLOAD_BYTES": "1234",
        "MAX_IMAGE_PIXELS": "5678",
        "MAX_FILES_PER_REQUEST": "3",
        "MAX_K": "9",
        "DEFAULT_K": "4",
        "BATCH_MAX_SIZE": "16",
        "BATCH_MAX_WAIT_MS": "5",
        "RELOAD_INTERVAL_S": "0",
        "API_KEY": "key",
        "API_KEY_SCOPE": "all",
        "LOG_LEVEL": "debug",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.model_dir == Path("/srv/models")
    assert (settings.max_upload_bytes, settings.max_image_pixels) == (1234, 5678)
    assert (settings.max_k, settings.default_k, settings.batch_max_size) == (9, 4, 16)
    assert (settings.api_key, settings.api_key_scope, settings.device) == ("key", "all", "cpu")


def test_empty_api_key_turns_the_check_off() -> None:
    assert Settings(api_key="").api_key is None


@pytest.mark.parametrize(
    "values",
    [{"default_k": 10, "max_k": 5}, {"device": "tpu"}, {"max_upload_bytes": 0}],
)
def test_contradictory_or_invalid_settings_are_refused(values: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)


def test_workers_default_to_half_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)))
    assert Settings().workers == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert Settings().workers == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    assert Settings().workers == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert Settings().workers == MAX_DEFAULT_WORKERS
    monkeypatch.setenv("WORKERS", "12")
    assert Settings().workers == 12
    with pytest.raises(ValidationError):
        Settings(workers=0)


def test_the_default_queue_holds_a_full_batch_for_every_admitted_request() -> None:
    assert Settings(batch_max_size=32).queue_limit == 64 * 32  # 2 x 32 admitted
    assert Settings(batch_max_size=32, inference_concurrency=8).queue_limit == 8 * 32
    assert Settings(batch_max_size=2, max_files_per_request=64).queue_limit == 64
