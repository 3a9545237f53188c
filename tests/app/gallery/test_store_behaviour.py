"""Every check of ``store_behaviour.py`` against every store: the embedded SQLite store and
Milvus (a real Milvus standalone server, started once per session by ``milvus_server.py``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.gallery.sqlite_store import SqliteGalleryStore
from app.gallery.store import GalleryStore
from tests.app.gallery import store_behaviour
from tests.app.gallery.store_behaviour import StoreFactory

CHECKS = [
    function
    for name, function in inspect.getmembers(store_behaviour, inspect.isfunction)
    if name.startswith("check_")
]


@pytest.fixture(scope="session")
def milvus_stores() -> Iterator[tuple[Callable[[], GalleryStore], Callable]]:
    """The Milvus helper's store makers, imported only when a Milvus test runs."""
    try:
        from tests.app.gallery.milvus_server import (
            milvus_store_factory,
            replica_of,
            stop_shared_server,
        )
    except ImportError as error:
        pytest.skip(f"the Milvus store is not importable here: {error}")
    try:
        yield milvus_store_factory, replica_of
    finally:
        stop_shared_server()


def sqlite_factory(root: Path) -> tuple[StoreFactory, list[GalleryStore]]:
    opened: list[GalleryStore] = []

    def make_store(same_as: GalleryStore | None = None) -> GalleryStore:
        if same_as is None:
            directory = root / f"gallery-{len(opened)}"
        else:
            assert isinstance(same_as, SqliteGalleryStore)
            directory = same_as.directory
        store = SqliteGalleryStore(directory)
        opened.append(store)
        return store

    return make_store, opened


def milvus_factory(
    request: pytest.FixtureRequest,
) -> tuple[StoreFactory, list[GalleryStore]]:
    fresh, replica_of = request.getfixturevalue("milvus_stores")

    def make_store(same_as: GalleryStore | None = None) -> GalleryStore:
        return fresh() if same_as is None else replica_of(same_as)

    return make_store, []  # the Milvus helper drops and closes its stores itself


@pytest.fixture(params=["sqlite", "milvus"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    if request.param == "sqlite":
        factory, opened = sqlite_factory(tmp_path)
    else:
        factory, opened = milvus_factory(request)
    yield factory
    for store in opened:
        store.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_store_keeps_its_promise(check: Callable[[StoreFactory], None], make_store) -> None:
    check(make_store)
