"""The HTTP gallery benchmark's synthetic gallery is one the server keeps serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.gallery.sqlite_store import SqliteGalleryStore
from benchmarks import gallery_http_bench
from benchmarks.gallery_index_bench import SPACE


def test_the_synthetic_gallery_is_of_added_items_in_the_active_space(tmp_path: Path) -> None:
    """A server removes the ``offline`` items its offline index does not hold when it seeds
    that index at start: synthetic offline items would be gone before the first search."""
    gallery_http_bench.seeded_gallery(tmp_path / "gallery", 300)
    store = SqliteGalleryStore(tmp_path / "gallery")
    try:
        assert store.active_space() == SPACE
        assert store.count() == 300
        items = store.items(None, 1000, None)
        assert {item.source for item in items} == {"added"}
        assert store.delete_offline_except(set()) == 0
        assert len(store.search(np.ones(SPACE.dimension, np.float32), 10, None)) == 10
    finally:
        store.close()
