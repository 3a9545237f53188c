"""Settings come from upper-case environment variables and refuse contradictions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from app import settings as settings_module
from app.settings import MAX_DEFAULT_WORKERS, Settings, cpu_quota, usable_cpus


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


def test_workers_default_to_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "cpu_quota", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert Settings().workers == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    assert Settings().workers == 6
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert Settings().workers == MAX_DEFAULT_WORKERS
    monkeypatch.setenv("WORKERS", "12")
    assert Settings().workers == 12
    with pytest.raises(ValidationError):
        Settings(workers=0)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5), ("junk", None)],
)
def test_the_cgroup_v2_cpu_quota_is_read(tmp_path: Path, cpu_max: str, expected: float) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert cpu_quota(tmp_path / "cpu.max", tmp_path / "no-v1") == expected


@pytest.mark.parametrize(("quota_us", "expected"), [("-1\n", None), ("250000\n", 2.5)])
def test_the_cgroup_v1_cpu_quota_is_read(tmp_path: Path, quota_us: str, expected: float) -> None:
    (tmp_path / "cpu.cfs_quota_us").write_text(quota_us)
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(tmp_path / "no-v2", tmp_path) == expected


def test_a_cpu_quota_caps_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    for quota, expected in ((None, 16), (2.0, 2), (1.5, 2), (0.05, 1), (32.0, 16)):
        monkeypatch.setattr(settings_module, "cpu_quota", lambda quota=quota: quota)
        assert usable_cpus() == expected


def test_tensorflow_threads_share_the_cpus_among_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings_module, "cpu_quota", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert Settings().model_thread_count == 1  # 8 workers
    assert Settings(workers=2).model_thread_count == 4
    assert Settings(workers=3).model_thread_count == 2
    assert Settings(workers=16).model_thread_count == 1
    assert Settings(workers=2, model_threads=3).model_thread_count == 3


def test_the_default_queue_holds_a_full_batch_for_every_admitted_request() -> None:
    assert Settings(batch_max_size=32).queue_limit == 64 * 32  # 2 x 32 admitted
    assert Settings(batch_max_size=32, inference_concurrency=8).queue_limit == 8 * 32
    assert Settings(batch_max_size=2, max_files_per_request=64).queue_limit == 64
