"""The gallery service over an in-memory store, with the quick models' real encoder and
small offline index versions cut from the quick models' index."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from app.core.errors import ServiceError
from app.core.index import GalleryIndex, load_index
from app.core.registry import ModelSet, ModelVersions
from app.core.runtime import LoadedModel, load_autoencoder, load_model
from app.gallery.images import model_batch, offline_image, stored_image
from app.gallery.service import (
    GalleryInputError,
    GalleryService,
    GalleryUnavailableError,
    codes_signature,
)
from app.gallery.sqlite_store import SqliteGalleryStore
from app.gallery.store import CodeSpace, id_of
from contract.layout import AUTOENCODER, INDEX
from contract.metadata import AutoencoderMetadata
from contract.signatures import AUTOENCODER_SERVED, ENCODE, ENCODE_CODES
from tests.app.gallery.memory_store import MemoryGalleryStore
from tests.app.gallery.milvus_server import milvus_store_factory, replica_of
from tests.app.gallery.small_index import write_index_subset
from tests.app.samples import gradient_image

WAIT_S = 120  # bound on waiting for the background job (only a hang reaches it)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def encoder(quick_models: Path) -> LoadedModel[Any]:
    return load_autoencoder(quick_models / AUTOENCODER / "1", "/CPU:0")


@pytest.fixture(scope="module")
def indexes(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> list[GalleryIndex]:
    """Offline version 1 (cells 0-39) and version 2 (cells 20-59: half of them new)."""
    source = quick_models / INDEX / "1"
    root = tmp_path_factory.mktemp("models") / INDEX
    return [
        load_index(write_index_subset(source, root / "1", slice(0, 40), 1)),
        load_index(write_index_subset(source, root / "2", slice(20, 60), 2)),
    ]


def models_with(
    encoder: LoadedModel[Any], index: GalleryIndex | None, default: LoadedModel[Any] | None = None
) -> ModelSet:
    """What the registry would serve: ``index`` built with ``encoder``; ``default`` (else
    ``encoder``) the default autoencoder."""
    default = default or encoder
    loaded = {model.version: model for model in (default, encoder)}
    return ModelSet(
        autoencoder=default,
        index=index,
        encoder=encoder,
        versions={
            AUTOENCODER: ModelVersions(loaded),
            INDEX: ModelVersions({} if index is None else {index.version: index}),
        },
        encoders={} if index is None else {index.version: encoder},
    )


class Served:
    """A registry stand-in: tests swap ``models`` as a reload would."""

    def __init__(self, models: ModelSet) -> None:
        self.models = models
        self.loaded: list[int] = []

    def __call__(self) -> ModelSet:
        return self.models

    def load(self, version: int) -> LoadedModel[Any]:
        self.loaded.append(version)
        raise RuntimeError(f"version {version} is not on disk in this test")


@pytest.fixture
def served(encoder: LoadedModel[Any], indexes: list[GalleryIndex]) -> Served:
    """The registry stand-in most tests start from: offline version 1 and its encoder."""
    return Served(models_with(encoder, indexes[0]))


@pytest.fixture
def running() -> Iterator[Callable[..., GalleryService]]:
    """``running(store, served)`` -> a started service, closed after the test."""
    started: list[GalleryService] = []

    def start(store: Any, served: Served, **options: Any) -> GalleryService:
        service = GalleryService(store, served, served.load, **options)
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()


def offline_ids(index: GalleryIndex) -> set[int]:
    return {
        id_of(offline_image(index.image_png(int(item_id)) or b"").digest) for item_id in index.ids
    }


@pytest.fixture(params=["memory", "sqlite", "milvus"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """Opens the store a test's services share: one in-memory store; the SQLite file in a
    fresh GALLERY_DIR, opened anew by each call as each worker process opens it; or a fresh
    collection prefix on the session's real Milvus server, opened anew as each replica
    opens it (its collections are dropped when the session's server stops)."""
    if request.param == "memory":
        shared = MemoryGalleryStore()
        return lambda: shared
    if request.param == "sqlite":
        return lambda: SqliteGalleryStore(tmp_path / "gallery")
    first = milvus_store_factory()  # skips, saying why, where no server can start
    return lambda: replica_of(first)


def test_an_empty_store_is_seeded_from_the_offline_index(
    running: Callable[..., GalleryService],
    indexes: list[GalleryIndex],
    stores: Callable[[], Any],
    served: Served,
) -> None:
    store = stores()
    service = running(store, served)
    assert store.active_space() == CodeSpace(1, 64, "cosine")
    items = store.items(None, 1000, None)
    assert {item.id for item in items} == offline_ids(indexes[0])
    assert {item.source for item in items} == {"offline"}
    assert store.labels() == dict(Counter(str(label) for label in indexes[0].labels))
    # Each cell keeps the index's own code: searching it finds the cell itself first.
    codes = indexes[0].index.reconstruct_n(0, indexes[0].size)
    for position in (0, 17, 39):
        cell = offline_image(indexes[0].image_png(int(indexes[0].ids[position])) or b"")
        space, _ = service.searchable()
        found = service.search(space, codes[position], 1, None)
        assert found is not None and found[0].id == id_of(cell.digest)
        assert found[0].distance < 1e-5
    assert service.state.ready and service.state.items == 40


def test_seeding_again_is_a_no_op_and_a_new_offline_version_keeps_added_cells(
    running: Callable[..., GalleryService],
    encoder: LoadedModel[Any],
    indexes: list[GalleryIndex],
    stores: Callable[[], Any],
    served: Served,
) -> None:
    first = running(stores(), served)
    added = add_cells(first, encoder, [gradient_image((30, 30))], "mine")
    first.close()
    store = stores()
    again = running(store, served)  # a restart: the same offline version again
    wait_for(lambda: again.state.offline_version == 1, "the restart's check of the seeding")
    assert store.count() == 41
    served.models = models_with(encoder, indexes[1])  # a newer offline version serves
    wanted = offline_ids(indexes[1])

    def offline() -> set[int]:
        return {item.id for item in store.items(None, 1000, None) if item.source == "offline"}

    wait_for(lambda: offline() == wanted, "the new version's cells, and only those")
    assert store.get(added[0].item.id) is not None
    assert store.count() == 41


def test_workers_starting_together_seed_each_cell_once(
    running: Callable[..., GalleryService],
    indexes: list[GalleryIndex],
    stores: Callable[[], Any],
    served: Served,
) -> None:
    services: list[GalleryService] = []
    threads = [
        threading.Thread(target=lambda: services.append(running(stores(), served)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(services) == 3
    assert all(service.searchable()[0] == CodeSpace(1, 64, "cosine") for service in services)
    assert {service.count() for service in services} == {40}
    assert {item.id for item in services[0].items(None, 1000, None)} == offline_ids(indexes[0])


class GatedStore(MemoryGalleryStore):
    """Holds the re-encoding's batch number ``hold_at`` (from 0) until ``release`` is set,
    so a test can look at the gallery while it is half re-encoded."""

    def __init__(self, hold_at: int) -> None:
        super().__init__()
        self.hold_at = hold_at
        self.release = threading.Event()

    def put_codes(self, space: CodeSpace, ids: Sequence[int], codes: np.ndarray) -> None:
        if self.calls["put_codes"] == self.hold_at:
            self.release.wait(WAIT_S)
        super().put_codes(space, ids, codes)


def test_a_new_autoencoder_version_is_encoded_in_the_background_then_searched(
    running: Callable[..., GalleryService],
    encoder: LoadedModel[Any],
    indexes: list[GalleryIndex],
    served: Served,
) -> None:
    store = GatedStore(hold_at=1)
    service = running(store, served)
    newer = replace(encoder, version=2)
    served.models = models_with(encoder, indexes[0], default=newer)
    wait_for(lambda: service.state.reencoding is not None, "re-encoding progress")
    progress = service.state.reencoding
    assert progress is not None
    assert (progress.encoder_version, progress.total) == (2, 40)
    assert 0 < progress.done < progress.total
    # Meanwhile searches use the previous codes and their encoder.
    space, used = service.searchable()
    assert (space.encoder_version, used.version) == (1, 1)
    store.release.set()
    wait_for(lambda: service.active_space == CodeSpace(2, 64, "cosine"), "the switch")
    space, used = service.searchable()
    assert used is newer
    assert store.code_count(space) == store.count() == 40
    wait_for(lambda: service.state.encoder_version == 2, "the state's switch")
    assert service.state.reencoding is None and service.state.ready


def test_an_addition_is_encoded_again_when_the_space_switched_meanwhile(
    running: Callable[..., GalleryService], encoder: LoadedModel[Any], indexes: list[GalleryIndex]
) -> None:
    store = MemoryGalleryStore()
    newer = replace(encoder, version=2)
    served = Served(models_with(encoder, indexes[0], default=encoder))
    service = running(store, served)
    served.models = models_with(encoder, indexes[0], default=newer)
    service.close()  # no background job: the test switches the space itself
    used: list[int] = []

    async def encode(model: LoadedModel[Any], batch: np.ndarray) -> np.ndarray:
        used.append(model.version)
        if len(used) == 1:  # another worker finishes a re-encoding now
            switch_space(store, CodeSpace(2, 64, "cosine"))
        return model.run(ENCODE, batch)

    cell = stored_image(gradient_image((30, 30)))
    space, added = anyio.run(service.add, [cell], "mine", "", encode)
    assert used == [1, 2]
    assert space == CodeSpace(2, 64, "cosine")
    assert added[0].created and store.get(added[0].item.id) is not None


def switch_space(store: MemoryGalleryStore, space: CodeSpace) -> None:
    store.open_space(space)
    for item in store.items(None, 10_000, None):
        store.put_codes(space, [item.id], np.ones((1, space.dimension), np.float32))
    store.activate(space)


@pytest.mark.parametrize(
    ("label", "note"),
    [("", ""), ("x" * 65, ""), ("tab\there", ""), ("ok", "n" * 257), ("ok", "line\nbreak")],
)
def test_a_label_or_note_out_of_bounds_adds_nothing(
    running: Callable[..., GalleryService],
    encoder: LoadedModel[Any],
    label: str,
    note: str,
    served: Served,
) -> None:
    store = MemoryGalleryStore()
    service = running(store, served)
    with pytest.raises(GalleryInputError) as refused:
        add_cells(service, encoder, [gradient_image((30, 30))], label, note)
    assert refused.value.status_code == 422
    assert store.count() == 40


def test_a_search_in_a_space_that_stopped_being_active_answers_none(
    running: Callable[..., GalleryService],
    served: Served,
) -> None:
    store = MemoryGalleryStore()
    service = running(store, served)
    space, _ = service.searchable()
    switch_space(store, CodeSpace(2, 64, "cosine"))
    assert service.search(space, np.ones(64, np.float32), 3, None) is None


class BrokenStore(MemoryGalleryStore):
    def get(self, item_id: int) -> Any:
        raise ConnectionError("the store's server went away")

    def count(self, label: str | None = None) -> int:
        raise ConnectionError("the store's server went away")


def test_a_store_that_fails_is_a_503_and_an_unready_gallery(
    running: Callable[..., GalleryService],
    served: Served,
) -> None:
    service = running(BrokenStore(), served)
    with pytest.raises(GalleryUnavailableError) as unavailable:
        service.get(1)
    assert unavailable.value.status_code == 503
    assert not service.state.ready
    assert "unreachable" in (service.state.reason or "")


def test_an_empty_gallery_without_an_index_waits_and_says_why(
    running: Callable[..., GalleryService], encoder: LoadedModel[Any]
) -> None:
    service = running(MemoryGalleryStore(), Served(models_with(encoder, None)))
    with pytest.raises(GalleryUnavailableError, match="seeded from malaria_index"):
        service.searchable()


def test_the_active_encoder_is_loaded_when_the_registry_no_longer_keeps_it(
    running: Callable[..., GalleryService],
    encoder: LoadedModel[Any],
    served: Served,
) -> None:
    store = GatedStore(hold_at=0)  # the re-encoding to version 3 waits
    running(store, served).close()
    newer = replace(encoder, version=3)
    served.models = ModelSet(autoencoder=newer, versions={AUTOENCODER: ModelVersions({3: newer})})
    try:
        service = running(store, served)
        assert served.loaded and served.loaded[0] == 1  # tried: version 1 encoded the codes
        with pytest.raises(ServiceError) as unavailable:
            service.searchable()
        assert unavailable.value.status_code == 503
        assert "version 1" in unavailable.value.detail
    finally:
        store.release.set()


@pytest.mark.parametrize(
    ("busy", "share", "pause"), [(True, 0.1, 0.9), (True, 0.5, 0.1), (False, 0.1, 0.001)]
)
def test_re_encoding_yields_most_of_the_time_while_the_worker_serves(
    monkeypatch: pytest.MonkeyPatch, busy: bool, share: float, pause: float
) -> None:
    served = Served(ModelSet())
    service = GalleryService(MemoryGalleryStore(), served, served.load, reencode_share=share)
    if busy:
        service.note_query()
    waited: list[float] = []
    monkeypatch.setattr(service._stopping, "wait", waited.append)
    service._pace(0.1)
    assert waited == [pytest.approx(pause)]


def add_cells(
    service: GalleryService,
    encoder: LoadedModel[Any],
    images: list[Any],
    label: str,
    note: str = "",
) -> list[Any]:
    async def encode(model: LoadedModel[Any], batch: np.ndarray) -> np.ndarray:
        return model.run(ENCODE, batch)

    cells = [stored_image(image) for image in images]
    _, added = anyio.run(service.add, cells, label, note, encode)
    return added


def test_additions_and_re_encoding_use_the_codes_alone_where_the_version_offers_them(
    running: Callable[..., GalleryService],
    quick_models: Path,
    encoder: LoadedModel[Any],
    indexes: list[GalleryIndex],
    monkeypatch: pytest.MonkeyPatch,
    served: Served,
) -> None:
    """``encode_codes`` gives ``encode``'s codes without the OOD score (a third of the work):
    the server loads it where the version has it; a version without it is encoded through
    ``encode``."""
    folder = quick_models / AUTOENCODER / "1"
    without_codes = load_model(folder, "/CPU:0", AUTOENCODER_SERVED, AutoencoderMetadata)
    assert codes_signature(without_codes) == ENCODE
    assert codes_signature(encoder) == ENCODE_CODES
    batch = model_batch([gradient_image((30, 30))], encoder.height, encoder.width)
    np.testing.assert_allclose(
        encoder.run(ENCODE_CODES, batch), without_codes.run(ENCODE, batch), atol=1e-5
    )
    # The background re-encoding to a version that offers it calls it.
    newer = replace(encoder, version=2)
    called: list[str] = []
    run = newer.run

    def recording(signature: str, images: np.ndarray) -> np.ndarray:
        called.append(signature)
        return run(signature, images)

    monkeypatch.setattr(newer, "run", recording)
    store = MemoryGalleryStore()
    service = running(store, served)
    served.models = models_with(encoder, indexes[0], default=newer)
    wait_for(lambda: service.active_space == CodeSpace(2, 64, "cosine"), "the switch")
    assert called and set(called) == {ENCODE_CODES}
