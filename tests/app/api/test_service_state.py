"""The service a worker runs, built from the settings and closed in order: a batcher per
declared name, the gallery, the reload watchers, and Pillow's pixel limit put back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.api import service_state
from app.api.metrics import ServiceMetrics
from app.api.service_state import build_service_state, close_service_state, start_reload_watchers
from app.core.batching import BatcherClosedError
from tests.app.helpers import settings_for

pytestmark = pytest.mark.anyio


def identity(batch: np.ndarray) -> np.ndarray:
    return batch


async def test_built_with_a_batcher_per_name_then_closed_in_full(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    settings = settings_for(tmp_path / "models", reload_interval_s=60, max_image_pixels=12345)
    service = await build_service_state(settings, ServiceMetrics(), ["first", "second"])
    try:
        assert set(service.batchers) == {"first", "second"}
        assert (await service.batchers["first"].submit(identity, np.ones((1, 2)))).shape == (1, 2)
        assert service.gallery is not None and service.reload_signal is None
        assert Image.MAX_IMAGE_PIXELS == 12345
        assert service.registry.missing()  # an empty model folder: up, but not ready
        start_reload_watchers(service)
        (poll,) = service.watchers
    finally:
        await close_service_state(service)
    assert poll.cancelled()
    assert before == Image.MAX_IMAGE_PIXELS
    with pytest.raises(BatcherClosedError):
        await service.batchers["second"].submit(identity, np.ones((1, 2)))


async def test_a_failed_start_closes_what_was_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: object) -> None:
        raise ConnectionError("the gallery store is unreachable")

    monkeypatch.setattr(service_state, "open_gallery", unreachable)
    built: list[service_state.ServiceState] = []
    real_close = service_state.close_service_state

    async def recorded_close(service: service_state.ServiceState) -> None:
        built.append(service)
        await real_close(service)

    monkeypatch.setattr(service_state, "close_service_state", recorded_close)
    before = Image.MAX_IMAGE_PIXELS
    settings = settings_for(tmp_path / "models", max_image_pixels=12345)
    with pytest.raises(ConnectionError):
        await build_service_state(settings, ServiceMetrics(), ["only"])
    (service,) = built
    assert before == Image.MAX_IMAGE_PIXELS
    with pytest.raises(BatcherClosedError):
        await service.batchers["only"].submit(identity, np.ones((1, 2)))
