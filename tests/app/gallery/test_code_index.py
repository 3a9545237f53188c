"""The in-memory index: exact below its limits, recall against exact search above them
(limits lowered here so that a few thousand codes reach the IVF and bitmap paths), and
changes in place, growth and shrinkage."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.gallery import code_index
from app.gallery.code_index import CodeIndex
from app.gallery.store import CodeSpace, normalised

SPACE = CodeSpace(1, 16, "cosine")
L2 = CodeSpace(1, 16, "l2")


def clustered(count: int, space: CodeSpace = SPACE, seed: int = 0) -> np.ndarray:
    """Codes from one mixture of Gaussians (neighbours are meaningful, as with an encoder);
    ``seed`` draws other codes of the same mixture."""
    centres = np.random.default_rng(1234).normal(size=(40, space.dimension))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(centres), count)
    codes = centres[picks] + rng.normal(scale=0.7, size=(count, space.dimension))
    return normalised(codes.astype(np.float32), space.metric)


def labelled(count: int, shares: dict[str, float], seed: int = 1) -> tuple[list[str], np.ndarray]:
    """Labels drawn independently of the codes, in the given shares: names and numbers."""
    names = list(shares)
    rng = np.random.default_rng(seed)
    numbers = rng.choice(len(names), count, p=list(shares.values())).astype(np.int32)
    return names, numbers


def exact(codes, ids, query, k, metric="cosine") -> list[int]:
    rows = normalised(codes, metric)
    query = normalised(query[np.newaxis], metric)[0]
    distances = np.linalg.norm(rows - query, axis=1)
    return [int(ids[i]) for i in np.argsort(distances, kind="stable")[:k]]


def recall(index: CodeIndex, codes, ids, names, numbers, label, queries) -> float:
    rows = np.ones(len(ids), bool) if label is None else numbers == names.index(label)
    hits = 0
    for query in queries:
        truth = set(exact(codes[rows], ids[rows], query, 10))
        found = index.search(query, 10, label)
        assert label is None or {n.label for n in found} == {label}
        hits += len(truth & {n.id for n in found})
    return hits / (10 * len(queries))


@pytest.fixture
def low_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """IVF from 1,000 codes; labels above 200 codes or 10% through the IVF's bitmaps."""
    monkeypatch.setattr(code_index, "EXACT_LIMIT", 1000)
    monkeypatch.setattr(code_index, "LABEL_EXACT_LIMIT", 200)
    monkeypatch.setattr(code_index, "LABEL_EXACT_SHARE", 0.10)


def test_a_small_index_is_exact_with_and_without_a_label() -> None:
    codes = clustered(500)
    ids = np.arange(500, dtype=np.int64) * 7919 + 3  # not positions
    names, numbers = labelled(500, {"a": 0.6, "b": 0.35, "c": 0.05})
    index = CodeIndex.build(SPACE, ids, numbers, names, codes)
    assert index.nlist == 1
    queries = clustered(20, seed=5)
    for query in queries:
        for label in (None, "a", "c"):
            rows = np.ones(500, bool) if label is None else numbers == names.index(label)
            found = index.search(query, 8, label)
            assert [n.id for n in found] == exact(codes[rows], ids[rows], query, 8)
    nearest = index.search(codes[17], 1)[0]
    assert (nearest.id, nearest.label) == (int(ids[17]), names[numbers[17]])
    assert nearest.distance == pytest.approx(0.0, abs=1e-5)


def test_distances_are_cosine_or_euclidean() -> None:
    rows = np.array([[1, 0] + [0] * 14, [0.6, 0.8] + [0] * 14], np.float32)
    index = CodeIndex.build(SPACE, np.array([1, 2]), np.array([0, 0]), ["x"], rows)
    found = index.search(np.array([10.0] + [0.0] * 15), 2)  # the length must not matter
    assert [n.id for n in found] == [1, 2]
    assert [n.distance for n in found] == pytest.approx([0.0, 0.4], abs=1e-6)
    index = CodeIndex.build(L2, np.array([1, 2]), np.array([0, 0]), ["x"], rows * 3)
    found = index.search(np.zeros(16, np.float32), 2)
    assert [n.distance for n in found] == pytest.approx([3.0, 3.0], abs=1e-5)


@pytest.mark.usefixtures("low_limits")
def test_a_large_index_keeps_recall_with_and_without_a_label() -> None:
    count = 6000
    codes = clustered(count)
    ids = np.random.default_rng(2).choice(1 << 53, count, replace=False)
    names, numbers = labelled(count, {"half": 0.5, "fifth": 0.2, "small": 0.03, "rest": 0.27})
    index = CodeIndex.build(SPACE, ids, numbers, names, codes)
    assert index.nlist > 1
    assert index.nprobe < index.nlist  # calibrated below a full scan
    queries = clustered(60, seed=9)
    assert recall(index, codes, ids, names, numbers, None, queries) >= 0.95
    assert recall(index, codes, ids, names, numbers, "half", queries) >= 0.95  # bitmap
    assert recall(index, codes, ids, names, numbers, "fifth", queries) >= 0.95  # bitmap
    assert recall(index, codes, ids, names, numbers, "small", queries) == 1.0  # exact


def test_added_and_removed_items_are_found_and_gone() -> None:
    codes = clustered(300)
    ids = np.arange(300, dtype=np.int64)
    index = CodeIndex.build(SPACE, ids[:200], np.zeros(200, np.int32), ["a"], codes[:200])
    assert index.add(ids[200:].tolist(), ["b"] * 100, codes[200:]) == 100
    assert index.add([200, 201], ["b", "b"], codes[200:202]) == 0  # already there
    assert len(index) == 300
    assert index.search(codes[250], 1, "b")[0].id == 250
    assert index.search(codes[250], 1, "a")[0].id != 250
    assert index.remove([250, 10, 99999]) == 2
    assert 250 not in index and 10 not in index and 11 in index
    assert 250 not in [n.id for n in index.search(codes[250], 300, None)]
    assert 10 not in [n.id for n in index.search(codes[10], 300, "a")]
    assert len(index.search(codes[0], 1000, "b")) == 99
    index.add([250], ["c"], codes[250:251])  # back, under another label
    found = index.search(codes[250], 1, None)[0]
    assert (found.id, found.label) == (250, "c")
    assert index.search(codes[0], 5, "c")[0].id == 250
    assert index.search(codes[0], 5, "nobody") == []


@pytest.mark.usefixtures("low_limits")
def test_the_index_rebuilds_as_it_grows_and_shrinks() -> None:
    count = 5000
    codes = clustered(count)
    ids = np.random.default_rng(3).choice(1 << 53, count, replace=False)
    names, numbers = labelled(count, {"a": 0.7, "b": 0.3})
    index = CodeIndex.build(SPACE, ids[:300], numbers[:300], names, codes[:300])
    assert index.nlist == 1
    for start in range(300, count, 250):
        stop = start + 250
        index.add(
            ids[start:stop].tolist(), [names[n] for n in numbers[start:stop]], codes[start:stop]
        )
    assert len(index) == count
    assert index.nlist > 1  # grown past EXACT_LIMIT: lists trained
    queries = clustered(40, seed=11)
    assert recall(index, codes, ids, names, numbers, None, queries) >= 0.95
    assert recall(index, codes, ids, names, numbers, "b", queries) >= 0.95
    index.remove(ids[: count - 400].tolist())
    assert len(index) == 400
    assert index.nlist == 1  # shrunk: exact again
    kept = slice(count - 400, count)
    for query in queries[:10]:
        found = [n.id for n in index.search(query, 5, "a")]
        rows = numbers[kept] == 0
        assert found == exact(codes[kept][rows], ids[kept][rows], query, 5)


@pytest.mark.usefixtures("low_limits")
def test_a_label_outgrowing_its_copy_moves_to_a_bitmap() -> None:
    codes = clustered(1500)
    ids = np.arange(1500, dtype=np.int64) + 10
    index = CodeIndex.build(SPACE, ids[:1200], np.zeros(1200, np.int32), ["a"], codes[:1200])
    index.add(ids[1200:].tolist(), ["new"] * 300, codes[1200:])  # past LABEL_EXACT_LIMIT
    index.remove(ids[1200:1210].tolist())
    queries = clustered(20, seed=4)
    names = ["a", "new"]
    numbers = np.array([0] * 1200 + [1] * 300)
    alive = np.ones(1500, bool)
    alive[1200:1210] = False
    found_recall = recall(index, codes[alive], ids[alive], names, numbers[alive], "new", queries)
    assert found_recall >= 0.95


def test_bad_queries_are_refused() -> None:
    index = CodeIndex.build(SPACE, np.array([1]), np.array([0]), ["a"], clustered(1))
    with pytest.raises(ValueError, match="16"):
        index.search(np.ones(5, np.float32), 1)
    with pytest.raises(ValueError, match="finite"):
        index.search(np.full(16, np.nan, np.float32), 1)
    assert index.search(np.ones(16, np.float32), 0) == []
    with pytest.raises(ValueError, match="twice"):
        CodeIndex.build(SPACE, np.array([2, 1, 2]), np.zeros(3), ["a"], clustered(3))


def test_an_empty_index_answers_nothing() -> None:
    index = CodeIndex.build(SPACE, np.empty(0), np.empty(0), [], np.empty((0, 16)))
    assert index.search(np.ones(16, np.float32), 5) == []
    assert index.add([7], ["a"], clustered(1)) == 1
    assert [n.id for n in index.search(np.ones(16, np.float32), 5, "a")] == [7]


def test_searches_run_beside_changes() -> None:
    codes = clustered(2000)
    index = CodeIndex.build(SPACE, np.arange(1000), np.zeros(1000, np.int32), ["a"], codes[:1000])
    errors: list[BaseException] = []

    def search() -> None:
        try:
            for query in codes[:300]:
                assert len(index.search(query, 5, "a")) == 5
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    searchers = [threading.Thread(target=search) for _ in range(3)]
    for thread in searchers:
        thread.start()
    for start in range(1000, 2000, 50):
        index.add(list(range(start, start + 50)), ["a"] * 50, codes[start : start + 50])
        index.remove(list(range(start - 1000, start - 975)))
    for thread in searchers:
        thread.join()
    assert errors == []
    assert len(index) == 1500
