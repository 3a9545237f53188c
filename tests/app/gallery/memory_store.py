"""A ``GalleryStore`` in one process's memory, for the gallery service's unit tests.

Exact search over dictionaries under one lock: the protocol's rules (atomic adds, stale
spaces refused, digests deduplicated, leases) without an engine, so a service test fails
for the service's own reasons. It counts its calls, so a test can see what the service did.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from app.gallery.store import (
    ID_BITS,
    Added,
    CodeSpace,
    GalleryItem,
    Neighbour,
    NewItem,
    StaleSpaceError,
    checked_codes,
    id_of,
    normalised,
)


class MemoryGalleryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, GalleryItem] = {}
        self._images: dict[int, bytes] = {}
        self._digests: dict[bytes, int] = {}
        self._codes: dict[CodeSpace, dict[int, np.ndarray]] = {}
        self._active: CodeSpace | None = None
        self._leases: dict[str, tuple[str, float]] = {}
        self.calls: Counter[str] = Counter()
        self.closed = False

    def active_space(self) -> CodeSpace | None:
        return self._active

    def add(self, items: Sequence[NewItem], codes: np.ndarray, space: CodeSpace) -> list[Added]:
        self.calls["add"] += 1
        rows = checked_codes(codes, len(items), space)
        with self._lock:
            if space not in self._codes:
                raise StaleSpaceError(f"{space} is neither active nor being filled")
            results = []
            for item, row in zip(items, rows, strict=True):
                existing = self._digests.get(item.digest)
                if existing is not None:
                    self._codes[space].setdefault(existing, row)
                    results.append(Added(self._items[existing], created=False))
                    continue
                item_id = id_of(item.digest)
                while item_id in self._items:
                    item_id = (item_id + 1) % (1 << ID_BITS)
                stored = GalleryItem(item_id, item.label, item.note, time.time(), item.source)
                self._items[item_id] = stored
                self._images[item_id] = item.png
                self._digests[item.digest] = item_id
                self._codes[space][item_id] = row
                results.append(Added(stored, created=True))
            return results

    def get(self, item_id: int) -> GalleryItem | None:
        return self._items.get(item_id)

    def image(self, item_id: int) -> bytes | None:
        return self._images.get(item_id)

    def delete(self, item_id: int) -> bool:
        with self._lock:
            return self._remove(item_id)

    def _remove(self, item_id: int) -> bool:
        if item_id not in self._items:
            return False
        del self._items[item_id]
        del self._images[item_id]
        self._digests = {d: i for d, i in self._digests.items() if i != item_id}
        for codes in self._codes.values():
            codes.pop(item_id, None)
        return True

    def delete_offline_except(self, keep: set[int]) -> int:
        with self._lock:
            gone = [i for i, item in self._items.items() if item.source == "offline"]
            return sum(self._remove(i) for i in gone if i not in keep)

    def items(self, label: str | None, limit: int, after: int | None) -> list[GalleryItem]:
        chosen = [
            self._items[i]
            for i in sorted(self._items)
            if (after is None or i > after) and (label is None or self._items[i].label == label)
        ]
        return chosen[:limit]

    def count(self, label: str | None = None) -> int:
        return sum(label is None or item.label == label for item in self._items.values())

    def labels(self) -> dict[str, int]:
        return dict(Counter(item.label for item in self._items.values()))

    def search(self, code: np.ndarray, k: int, label: str | None) -> list[Neighbour]:
        self.calls["search"] += 1
        space = self._active
        if space is None:
            return []
        with self._lock:
            ids = [i for i in self._codes[space] if label is None or self._items[i].label == label]
            if not ids:
                return []
            matrix = np.stack([self._codes[space][i] for i in ids])
        query = normalised(np.asarray(code).reshape(1, -1), space.metric)[0]
        if space.metric == "cosine":
            distances = 1.0 - matrix @ query
        else:
            distances = np.linalg.norm(matrix - query, axis=1)
        order = np.argsort(distances, kind="stable")[:k]
        return [Neighbour(ids[j], self._items[ids[j]].label, float(distances[j])) for j in order]

    def open_space(self, space: CodeSpace) -> None:
        self.calls["open_space"] += 1
        with self._lock:
            self._codes.setdefault(space, {})

    def missing_codes(self, space: CodeSpace, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            if space not in self._codes:
                raise StaleSpaceError(f"{space} is not open")
            missing = [i for i in sorted(self._items) if i not in self._codes[space]]
            return [(i, self._images[i]) for i in missing[:limit]]

    def put_codes(self, space: CodeSpace, ids: Sequence[int], codes: np.ndarray) -> None:
        self.calls["put_codes"] += 1
        rows = checked_codes(codes, len(ids), space)
        with self._lock:
            if space not in self._codes:
                raise StaleSpaceError(f"{space} is not open")
            for item_id, row in zip(ids, rows, strict=True):
                if item_id in self._items:
                    self._codes[space].setdefault(item_id, row)

    def code_count(self, space: CodeSpace) -> int:
        return len(self._codes.get(space, {}))

    def activate(self, space: CodeSpace) -> None:
        self.calls["activate"] += 1
        with self._lock:
            if space not in self._codes:
                raise StaleSpaceError(f"{space} was never opened")
            self._codes = {space: self._codes[space]}
            self._active = space

    def claim(self, job: str, owner: str, ttl_s: float) -> bool:
        if not ttl_s > 0:
            raise ValueError("ttl_s must be positive")
        with self._lock:
            holder = self._leases.get(job)
            now = time.time()
            if holder is not None and holder[0] != owner and holder[1] > now:
                return False
            self._leases[job] = (owner, now + ttl_s)
            return True

    def refresh(self) -> None:
        self.calls["refresh"] += 1

    def close(self) -> None:
        self.closed = True
