"""The active code space searched in memory: one per worker process, kept current by the
embedded store (``sqlite_store.py``) as items come and go.

Why this shape (measured by ``python -m benchmarks.gallery_index_bench``, results in
``benchmarks/gallery_index_results.md``; 2 shared cores, one OpenMP thread per query):

* One ``IndexIVFFlat`` over every code, in L2 space. Cosine codes are unit length, where
  squared L2 is ``2 - 2 * similarity``, so one L2 index serves both metrics and k-means
  assigns by true distance (an inner-product quantizer prefers long centroids).
  Up to ``EXACT_LIMIT`` codes it has a single list: every search scans every code, so it is
  exact, and there is no training. Above, ``sqrt(n)`` lists: at 1M codes a query scans
  about a tenth of the gallery in 2.5 ms (p50), where a flat scan takes about 10 ms;
  HNSW took 47 s to build at 1M with recall 0.93 (``faiss_bench``) and cannot remove
  codes; 2,000 lists halve the search time but double the build, which every worker pays
  at start.
* ``nprobe`` is calibrated when the index is built: the smallest value (steps of 1.25x)
  reaching ``CALIBRATION_RECALL`` recall@10 against exact search for gallery codes used as
  queries, so it follows how clustered the real codes are rather than a constant tuned on
  synthetic ones (69 to 109 of 1,000 lists for the benchmark's overlapping clusters, as
  the calibration sample varies; recall@10 0.986 on held-out queries at 109).
* FAISS ids are *slots* (0, 1, 2, ...), not item ids, so that a label can be a bitmap
  over slots (``IDSelectorBitmap``: one bit per code, updated in place). Slots are given
  in id order at build time (found by binary search) and in arrival order after it
  (a dict of the arrivals only), which keeps a million ids out of a Python dict.
* A label filter is exact within the label, never "top k, then filter":
  a label holding at most ``LABEL_EXACT_LIMIT`` codes or ``LABEL_EXACT_SHARE`` of the
  gallery is searched exhaustively over its own copy of its codes (50,000 codes: about
  half a millisecond). A larger label is searched through the IVF with its bitmap as the
  selector and ``nprobe / sqrt(share)`` lists, which kept recall@10 at or above the
  unfiltered level in the measurements (its neighbours are sparser, so they sit in more
  lists). Scanning every list with a selector instead costs about 25 ms at 1M codes,
  whatever the label's size, hence the copies: together at most one more copy of the codes.
* The index grows and shrinks in place (``add_with_ids``, ``remove_ids``). When it has
  grown four times past the size it was trained for (or past ``EXACT_LIMIT`` with a
  single list), shrunk to a quarter of it, or half its slots are dead, it is rebuilt from
  its own lists on the changing thread while searches go on against the old one, then
  swapped in.

One lock guards each search and each in-place change: FAISS does not allow a search during
``add`` or ``remove_ids`` on the same index, and a search takes a few milliseconds.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from app.gallery.store import CodeSpace, Neighbour

logger = logging.getLogger(__name__)

EXACT_LIMIT = 50_000  # up to this many codes, one list: every search is exact
TRAINING_POINTS_PER_LIST = 40  # FAISS warns below 39
TRAINING_ITERATIONS = 10  # k-means iterations: lists only need to be roughly right
CALIBRATION_QUERIES = 100
# Above the promised 0.95 by three standard errors of a 100-query estimate (a target of 0.97
# from 64 queries once gave 0.957 on 1,000 held-out queries).
CALIBRATION_RECALL = 0.98
CALIBRATION_STEP = 1.25  # nprobe grows by this factor until the recall is reached
MIN_NPROBE = 8
LABEL_EXACT_LIMIT = 50_000
# A label's own copy is searched exhaustively (faiss.knn: ~11 ns a code) up to this share;
# above it, the IVF with the label's bitmap scans nprobe / sqrt(share) lists (~45 ns an
# entry scanned with a selector). Measured at 1M codes, exhaustive stays cheaper up to about
# half the gallery; a quarter keeps a two-label gallery (the malaria one) free of copies.
LABEL_EXACT_SHARE = 0.25
GROWTH_FACTOR = 4  # rebuild when the index holds this many times what it was trained for
_K_CALIBRATION = 11  # the query's own code comes back first; the next ten are compared


@dataclass
class _LabelCodes:
    """A small label's own codes, for an exhaustive search within the label."""

    dimension: int
    codes: np.ndarray = field(init=False)
    slots: np.ndarray = field(init=False)
    size: int = 0

    def __post_init__(self) -> None:
        self.codes = np.empty((16, self.dimension), np.float32)
        self.slots = np.empty(16, np.int64)

    @classmethod
    def of(cls, codes: np.ndarray, slots: np.ndarray) -> _LabelCodes:
        label = cls(codes.shape[1])
        label.codes = np.ascontiguousarray(codes, np.float32)
        label.slots = np.asarray(slots, np.int64).copy()
        label.size = len(slots)
        return label

    def add(self, codes: np.ndarray, slots: np.ndarray) -> None:
        end = self.size + len(slots)
        if end > len(self.slots):
            capacity = max(end, 2 * len(self.slots))
            self.codes = _grown(self.codes, capacity)
            self.slots = _grown(self.slots, capacity)
        self.codes[self.size : end] = codes
        self.slots[self.size : end] = slots
        self.size = end

    def remove(self, slot: int) -> None:
        positions = np.flatnonzero(self.slots[: self.size] == slot)
        if not len(positions):
            return
        position, last = int(positions[0]), self.size - 1
        self.codes[position] = self.codes[last]  # the last code fills the hole
        self.slots[position] = self.slots[last]
        self.size = last


def _grown(array: np.ndarray, length: int) -> np.ndarray:
    grown = np.zeros((length, *array.shape[1:]), array.dtype)
    grown[: len(array)] = array
    return grown


class _Core:
    """One built index and everything that maps its slots to items and labels; replaced as
    a whole when rebuilt, changed in place by ``add`` and ``remove`` otherwise."""

    def __init__(
        self,
        space: CodeSpace,
        ids: np.ndarray,
        label_numbers: np.ndarray,
        label_names: list[str],
        codes: np.ndarray,
        seed: int,
    ) -> None:
        dimension = space.dimension
        count = len(ids)
        self.space = space
        self.dimension = dimension
        capacity = max(1024, count + count // 4)
        self.slot_ids = np.full(capacity, -1, np.int64)
        self.slot_ids[:count] = ids
        self.slot_labels = np.full(capacity, -1, np.int32)
        self.slot_labels[:count] = label_numbers
        self.used = count
        self.base = count  # slots below this hold ids in ascending order
        self.arrivals: dict[int, int] = {}  # item id -> slot, for items added since
        self.alive = count
        self.built_for = count
        self.label_names = list(label_names)
        self.label_numbers = {name: number for number, name in enumerate(self.label_names)}
        self.label_counts = np.bincount(label_numbers, minlength=len(label_names)).tolist()
        self.exact: dict[int, _LabelCodes] = {}
        self.bitmaps: dict[int, np.ndarray] = {}
        by_label = np.argsort(label_numbers, kind="stable")
        start = 0
        for number, size in enumerate(self.label_counts):
            slots = by_label[start : start + size]
            start += size
            if self._is_small(size):
                self.exact[number] = _LabelCodes.of(codes[slots], slots)
            else:
                self.bitmaps[number] = self._bitmap_of(slots)
        self.nlist = 1
        if count > EXACT_LIMIT:
            self.nlist = max(2, min(round(math.sqrt(count)), count // TRAINING_POINTS_PER_LIST))
        self.index = self._trained_index(codes, seed)
        if count:
            self.index.add_with_ids(codes, np.arange(count, dtype=np.int64))
        self.nprobe = 1 if self.nlist == 1 else self._calibrated_nprobe(codes, seed)

    def _trained_index(self, codes: np.ndarray, seed: int) -> Any:
        quantizer = faiss.IndexFlatL2(self.dimension)
        if self.nlist == 1:
            # One list holds every code whatever its centroid: no training needed.
            quantizer.add(np.zeros((1, self.dimension), np.float32))
            return faiss.IndexIVFFlat(quantizer, self.dimension, 1, faiss.METRIC_L2)
        index = faiss.IndexIVFFlat(quantizer, self.dimension, self.nlist, faiss.METRIC_L2)
        index.cp.niter = TRAINING_ITERATIONS
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        points = min(len(codes), self.nlist * TRAINING_POINTS_PER_LIST)
        index.train(codes[np.sort(rng.choice(len(codes), points, replace=False))])
        return index

    def _calibrated_nprobe(self, codes: np.ndarray, seed: int) -> int:
        """The smallest nprobe (``MIN_NPROBE`` times powers of ``CALIBRATION_STEP``) whose
        recall@10 reaches ``CALIBRATION_RECALL`` for gallery codes used as queries (each
        one's own code left out of both answers). Steps finer than doubling matter: at 1M
        codes, 64 lists scan 6% of the gallery, 128 lists 13% for little more recall."""
        rng = np.random.default_rng(seed + 1)
        picks = rng.choice(len(codes), min(CALIBRATION_QUERIES, len(codes)), replace=False)
        queries = np.ascontiguousarray(codes[picks])
        _, exact = faiss.knn(queries, codes, _K_CALIBRATION, faiss.METRIC_L2)
        truth = [set(row.tolist()) - {int(pick)} for row, pick in zip(exact, picks, strict=True)]
        nprobe = MIN_NPROBE
        while nprobe < self.nlist:
            params = _ivf_parameters(nprobe)
            _, found = self.index.search(queries, _K_CALIBRATION, params=params)
            hits = sum(
                len(expected & (set(row.tolist()) - {int(pick)}))
                for row, expected, pick in zip(found, truth, picks, strict=True)
            )
            wanted = sum(len(expected) for expected in truth)
            if hits >= CALIBRATION_RECALL * wanted:
                return nprobe
            nprobe = math.ceil(nprobe * CALIBRATION_STEP)
        return self.nlist

    def _is_small(self, size: int) -> bool:
        return size <= max(LABEL_EXACT_LIMIT, LABEL_EXACT_SHARE * self.alive)

    def _bitmap_of(self, slots: np.ndarray) -> np.ndarray:
        bitmap = np.zeros((len(self.slot_ids) + 7) // 8, np.uint8)
        np.bitwise_or.at(bitmap, slots >> 3, (1 << (slots & 7)).astype(np.uint8))
        return bitmap

    # Lookups --------------------------------------------------------------------------

    def slot_of(self, item_id: int) -> int | None:
        slot = self.arrivals.get(item_id)
        if slot is not None:
            return slot
        position = int(np.searchsorted(self.slot_ids[: self.base], item_id))
        if (
            position < self.base
            and self.slot_ids[position] == item_id
            and self.slot_labels[position] >= 0
        ):
            return position
        return None

    # Changes in place ------------------------------------------------------------------

    def add(self, ids: Sequence[int], labels: Sequence[str], codes: np.ndarray) -> int:
        fresh: list[int] = []  # positions of the rows to add; an id twice: its first row
        seen: set[int] = set()
        for position, item_id in enumerate(ids):
            if int(item_id) not in seen and self.slot_of(int(item_id)) is None:
                fresh.append(position)
            seen.add(int(item_id))
        if not fresh:
            return 0
        self._reserve(self.used + len(fresh))
        slots = np.arange(self.used, self.used + len(fresh), dtype=np.int64)
        self.used += len(fresh)
        rows = np.ascontiguousarray(codes[fresh], np.float32)
        for slot, position, row in zip(slots.tolist(), fresh, rows, strict=True):
            number = self._label_number(labels[position])
            self.slot_ids[slot] = int(ids[position])
            self.slot_labels[slot] = number
            self.arrivals[int(ids[position])] = slot
            self.label_counts[number] += 1
            self.alive += 1
            self._place_in_label(number, slot, row)
        self.index.add_with_ids(rows, slots)
        return len(fresh)

    def remove(self, ids: Sequence[int]) -> int:
        slots = []
        for item_id in ids:
            slot = self.slot_of(int(item_id))
            if slot is None:
                continue
            number = int(self.slot_labels[slot])
            self.slot_labels[slot] = -1
            self.arrivals.pop(int(item_id), None)
            self.label_counts[number] -= 1
            self.alive -= 1
            if number in self.exact:
                self.exact[number].remove(slot)
            else:
                self.bitmaps[number][slot >> 3] &= np.uint8(~(1 << (slot & 7)) & 0xFF)
            slots.append(slot)
        if slots:
            self.index.remove_ids(faiss.IDSelectorBatch(np.array(slots, np.int64)))
        return len(slots)

    def _label_number(self, label: str) -> int:
        number = self.label_numbers.get(label)
        if number is None:
            number = len(self.label_names)
            self.label_names.append(label)
            self.label_numbers[label] = number
            self.label_counts.append(0)
            self.exact[number] = _LabelCodes(self.dimension)
        return number

    def _place_in_label(self, number: int, slot: int, row: np.ndarray) -> None:
        small = self.exact.get(number)
        if small is None:
            bitmap = self.bitmaps[number]
            bitmap[slot >> 3] |= np.uint8(1 << (slot & 7))
            return
        small.add(row[np.newaxis], np.array([slot]))
        if not self._is_small(small.size):  # grown too large for a copy: a bitmap instead
            self.bitmaps[number] = self._bitmap_of(small.slots[: small.size])
            del self.exact[number]

    def _reserve(self, needed: int) -> None:
        if needed <= len(self.slot_ids):
            return
        capacity = max(needed, 2 * len(self.slot_ids))
        self.slot_ids = np.concatenate(
            [self.slot_ids, np.full(capacity - len(self.slot_ids), -1, np.int64)]
        )
        self.slot_labels = np.concatenate(
            [self.slot_labels, np.full(capacity - len(self.slot_labels), -1, np.int32)]
        )
        for number, bitmap in self.bitmaps.items():
            self.bitmaps[number] = _grown(bitmap, (capacity + 7) // 8)

    # Rebuilding -------------------------------------------------------------------------

    def needs_rebuild(self) -> bool:
        if self.nlist == 1:
            grown = self.alive > EXACT_LIMIT
        else:
            grown = self.alive > GROWTH_FACTOR * self.built_for
            grown = grown or self.alive * GROWTH_FACTOR < self.built_for
        wasted = self.used > 2 * self.alive + 1024
        return grown or wasted

    def contents(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """Every live code read back from the inverted lists, in id order, with its id and
        label: what a rebuild starts from."""
        invlists = self.index.invlists
        code_bytes = self.dimension * 4
        slot_parts, code_parts = [], []
        for number in range(self.index.nlist):
            size = invlists.list_size(number)
            if not size:
                continue
            slot_parts.append(faiss.rev_swig_ptr(invlists.get_ids(number), size).copy())
            raw = faiss.rev_swig_ptr(invlists.get_codes(number), size * code_bytes)
            code_parts.append(np.frombuffer(raw, np.float32).reshape(size, -1).copy())
        if not slot_parts:
            empty = np.empty(0, np.int64)
            return empty, empty.astype(np.int32), [], np.empty((0, self.dimension), np.float32)
        slots = np.concatenate(slot_parts)
        codes = np.concatenate(code_parts)
        ids = self.slot_ids[slots]
        order = np.argsort(ids)
        numbers = self.slot_labels[slots][order]
        used, renumbered = np.unique(numbers, return_inverse=True)
        names = [self.label_names[number] for number in used.tolist()]
        return ids[order], renumbered.astype(np.int32), names, codes[order]

    # Searching --------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, label: str | None) -> list[Neighbour]:
        if label is None:
            candidates, nprobe, selector = self.alive, self.nprobe, None
        else:
            number = self.label_numbers.get(label)
            if number is None or not self.label_counts[number]:
                return []
            candidates = self.label_counts[number]
            small = self.exact.get(number)
            if small is not None:
                k = min(k, small.size)
                squared, positions = faiss.knn(query, small.codes[: small.size], k, faiss.METRIC_L2)
                return self._neighbours(squared[0], small.slots[positions[0]])
            share = candidates / max(self.alive, 1)
            nprobe = min(self.nlist, math.ceil(self.nprobe / math.sqrt(share)))
            selector = _bitmap_selector(self.bitmaps[number])
        k = min(k, candidates)
        if k <= 0:
            return []
        params = _ivf_parameters(nprobe)
        if selector is not None:
            params.sel = selector
        squared, slots = self.index.search(query, k, params=params)
        found = slots[0] >= 0
        return self._neighbours(squared[0][found], slots[0][found])

    def _neighbours(self, squared: np.ndarray, slots: np.ndarray) -> list[Neighbour]:
        squared = np.maximum(squared, 0.0)
        if self.space.metric == "cosine":
            distances = np.minimum(squared / 2.0, 2.0)  # unit codes: |a - b|^2 = 2 - 2 cos
        else:
            distances = np.sqrt(squared)
        return [
            Neighbour(int(self.slot_ids[slot]), self.label_names[self.slot_labels[slot]], distance)
            for slot, distance in zip(slots.tolist(), distances.tolist(), strict=True)
        ]


class CodeIndex:
    """The searchable codes of one space in this process.

    ``add`` and ``remove`` are called by one thread at a time (the store's refresh);
    ``search`` from any thread. Codes given to ``build`` and ``add`` are already as the store
    keeps them (``store.normalised``); a query is normalised here.
    """

    def __init__(self, core: _Core, seed: int) -> None:
        self._core = core
        self._seed = seed
        self._lock = threading.Lock()  # a search, or an in-place change
        self._changing = threading.Lock()  # one changer at a time, rebuilds included

    @classmethod
    def build(
        cls,
        space: CodeSpace,
        ids: np.ndarray,
        label_numbers: np.ndarray,
        label_names: Sequence[str],
        codes: np.ndarray,
        seed: int = 0,
    ) -> CodeIndex:
        """An index over ``codes`` (row i: item ``ids[i]``, label
        ``label_names[label_numbers[i]]``). Rows in ascending id order avoid a copy."""
        ids = np.asarray(ids, np.int64)
        label_numbers = np.asarray(label_numbers, np.int32)
        codes = np.asarray(codes, np.float32).reshape(len(ids), space.dimension)
        if not (len(ids) == len(label_numbers) == len(codes)):
            raise ValueError("ids, labels and codes differ in length")
        if len(ids) and (label_numbers.min() < 0 or label_numbers.max() >= len(label_names)):
            raise ValueError("a label number names no label")
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            order = np.argsort(ids, kind="stable")
            ids, label_numbers, codes = ids[order], label_numbers[order], codes[order]
            if np.any(ids[1:] == ids[:-1]):
                raise ValueError("an id appears twice")
        core = _Core(
            space, ids, label_numbers, list(label_names), np.ascontiguousarray(codes), seed
        )
        return cls(core, seed)

    @property
    def space(self) -> CodeSpace:
        return self._core.space

    @property
    def nprobe(self) -> int:
        return self._core.nprobe

    @property
    def nlist(self) -> int:
        return self._core.nlist

    def __len__(self) -> int:
        return self._core.alive

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, int):
            return False
        with self._lock:
            return self._core.slot_of(item_id) is not None

    def add(self, ids: Sequence[int], labels: Sequence[str], codes: np.ndarray) -> int:
        """Add the items not already here; returns how many were new."""
        rows = np.asarray(codes, np.float32).reshape(len(ids), self._core.dimension)
        if len(labels) != len(ids):
            raise ValueError("ids and labels differ in length")
        with self._changing:
            with self._lock:
                added = self._core.add(ids, labels, rows)
            self._rebuild_if_needed()
        return added

    def remove(self, ids: Sequence[int]) -> int:
        """Remove the items that are here; returns how many were."""
        with self._changing:
            with self._lock:
                removed = self._core.remove(ids)
            self._rebuild_if_needed()
        return removed

    def _rebuild_if_needed(self) -> None:
        """Rebuilt from the index's own lists while searches go on (only changes are held
        back, by ``_changing``), then swapped in."""
        old = self._core
        if not old.needs_rebuild():
            return
        ids, numbers, names, codes = old.contents()
        fresh = _Core(old.space, ids, numbers, names, codes, self._seed)
        logger.info(
            "gallery index rebuilt: %d codes, %d lists (was %d codes, %d lists)",
            fresh.alive,
            fresh.nlist,
            old.built_for,
            old.nlist,
        )
        with self._lock:
            self._core = fresh

    def search(self, code: np.ndarray, k: int, label: str | None = None) -> list[Neighbour]:
        """The ``k`` nearest items, among ``label``'s only when given."""
        query = np.asarray(code, np.float32).reshape(1, -1)
        if query.shape[1] != self._core.dimension:
            raise ValueError(
                f"code has {query.shape[1]} values, the {self._core.space} index expects "
                f"{self._core.dimension}"
            )
        if not np.all(np.isfinite(query)):
            raise ValueError("code holds a value that is not a finite number")
        if self._core.space.metric == "cosine":
            query = query / max(float(np.linalg.norm(query)), 1e-12)
        if k <= 0:
            return []
        with self._lock:
            return self._core.search(np.ascontiguousarray(query, np.float32), k, label)


# faiss's SWIG classes take keyword arguments and numpy arrays that its type stubs (for the
# C++ signatures) do not describe; these two calls are where the project relies on that.
def _ivf_parameters(nprobe: int) -> Any:
    return faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]


def _bitmap_selector(bitmap: np.ndarray) -> Any:
    return faiss.IDSelectorBitmap(bitmap)  # type: ignore[call-arg, arg-type]
