"""What every gallery store promises (``app/gallery/store.py``), as plain checks that take a
store factory: ``test_store_behaviour.py`` runs each one against every store kind.

A factory is called as ``make_store()`` for a store on a new, empty gallery, and as
``make_store(same_as=store)`` for another store object on ``store``'s gallery, as another
worker process or replica opens it. The factory closes what it made when the test ends.

Galleries here are small (tens of cells, codes of a few dimensions), so the checks run in
seconds and every search can be compared with a brute-force answer.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np
import pytest
from PIL import Image

from app.gallery.store import (
    MAX_LABEL_CHARS,
    MAX_NOTE_CHARS,
    Added,
    CodeSpace,
    GalleryStore,
    NewItem,
    Source,
    StaleSpaceError,
    content_digest,
    id_of,
    normalised,
)

DIMENSION = 8
V1 = CodeSpace(encoder_version=1, dimension=DIMENSION, metric="cosine")
V2 = CodeSpace(encoder_version=2, dimension=6, metric="cosine")
L2_SPACE = CodeSpace(encoder_version=1, dimension=DIMENSION, metric="l2")


class StoreFactory(Protocol):
    def __call__(self, same_as: GalleryStore | None = None) -> GalleryStore: ...


# Cells and codes ------------------------------------------------------------------------


def cell(
    number: int, label: str = "parasitized", note: str = "", source: Source = "added"
) -> NewItem:
    """A distinct 6x6 RGB cell (its pixels drawn from ``number``) as a store receives it."""
    pixels = np.random.default_rng(number).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    digest = content_digest(image.mode, image.size, image.tobytes())
    return NewItem(png=buffer.getvalue(), digest=digest, label=label, note=note, source=source)


def codes_for(numbers: Sequence[int], space: CodeSpace = V1) -> np.ndarray:
    """Each cell's code in ``space``: fixed per (cell, encoder version), as an encoder's are."""
    return np.stack(
        [
            np.random.default_rng([number, space.encoder_version])
            .normal(size=space.dimension)
            .astype(np.float32)
            for number in numbers
        ]
    ).reshape(len(numbers), space.dimension)


def filled(
    make_store: StoreFactory,
    labels: Sequence[str],
    space: CodeSpace = V1,
    source: Source = "added",
) -> tuple[GalleryStore, list[Added]]:
    """A store whose active space is ``space``, holding cell i with ``labels[i]``."""
    store = make_store()
    store.open_space(space)
    store.activate(space)
    numbers = list(range(len(labels)))
    items = [cell(n, label, source=source) for n, label in zip(numbers, labels, strict=True)]
    added = store.add(items, codes_for(numbers, space), space) if items else []
    return store, added


def brute_force(
    codes: np.ndarray, ids: Sequence[int], query: np.ndarray, k: int, metric: str
) -> list[tuple[int, float]]:
    """The exact answer: (id, distance) of the ``k`` nearest, nearest first."""
    rows, query = normalised(codes, metric), normalised(query[np.newaxis], metric)[0]
    cosine = metric == "cosine"
    distances = 1.0 - rows @ query if cosine else np.linalg.norm(rows - query, axis=1)
    order = np.argsort(distances, kind="stable")[:k]
    return [(int(ids[i]), float(distances[i])) for i in order]


# Empty gallery ---------------------------------------------------------------------------


def check_a_new_gallery_is_empty(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.active_space() is None
    assert store.count() == 0
    assert store.labels() == {}
    assert store.items(None, 10, None) == []
    assert store.search(np.ones(DIMENSION, np.float32), 5, None) == []


# Adding ----------------------------------------------------------------------------------


def check_add_stores_items_under_their_content_id(make_store: StoreFactory) -> None:
    store = make_store()
    store.open_space(V1)
    store.activate(V1)
    assert store.active_space() == V1
    items = [cell(1, "parasitized", note="ring stage"), cell(2, "uninfected")]
    before = time.time()
    added = store.add(items, codes_for([1, 2]), V1)
    after = time.time()
    assert [result.created for result in added] == [True, True]
    for result, item in zip(added, items, strict=True):
        stored = result.item
        assert stored.id == id_of(item.digest)
        assert (stored.label, stored.note, stored.source) == (item.label, item.note, "added")
        assert before - 1 <= stored.created <= after + 1
        assert store.get(stored.id) == stored
        assert store.image(stored.id) == item.png
    assert store.count() == 2


def check_add_is_idempotent_by_content(make_store: StoreFactory) -> None:
    store, added = filled(make_store, ["parasitized"])
    first = added[0].item
    again = cell(0, "uninfected", note="relabelled?")  # same pixels, other words
    result = store.add([again], codes_for([0]), V1)
    assert result == [Added(first, created=False)]
    assert store.get(first.id) == first  # label and note unchanged
    assert store.count() == 1
    # The same cell twice in one batch is one item.
    twice = store.add([cell(5), cell(5)], codes_for([5, 5]), V1)
    assert [r.created for r in twice] == [True, False]
    assert twice[0].item == twice[1].item
    assert store.count() == 2


def check_an_id_taken_by_another_cell_probes_upwards(make_store: StoreFactory) -> None:
    store = make_store()
    store.open_space(V1)
    store.activate(V1)
    png = cell(1).png
    first = NewItem(png=png, digest=bytes(8) + b"\x01" * 24, label="a")
    second = NewItem(png=cell(2).png, digest=bytes(8) + b"\x02" * 24, label="b")
    assert id_of(first.digest) == id_of(second.digest)
    added = store.add([first], codes_for([1]), V1) + store.add([second], codes_for([2]), V1)
    assert [a.item.id for a in added] == [id_of(first.digest), id_of(first.digest) + 1]
    assert [a.created for a in added] == [True, True]
    assert store.get(added[1].item.id).label == "b"
    assert store.image(added[1].item.id) == second.png
    # The colliding cell added again is found by its digest, not by the id it asks for.
    assert store.add([second], codes_for([2]), V1)[0] == Added(added[1].item, created=False)


def check_a_bad_add_stores_nothing(make_store: StoreFactory) -> None:
    store, _ = filled(make_store, ["a", "b"])
    with pytest.raises(ValueError):
        store.add([cell(10), cell(11)], codes_for([10]), V1)  # one code for two cells
    with pytest.raises(ValueError):
        store.add([cell(10)], np.ones((1, DIMENSION + 1), np.float32), V1)  # wrong dimension
    bad_items = [
        cell(10, label=""),
        cell(10, label="x" * (MAX_LABEL_CHARS + 1)),
        cell(10, label="two\nlines"),
        cell(10, note="x" * (MAX_NOTE_CHARS + 1)),
        replace(cell(10), png=b"GIF89a"),
        replace(cell(10), digest=b"short"),
    ]
    for bad in bad_items:
        with pytest.raises(ValueError):
            store.add([cell(11), bad], codes_for([11, 10]), V1)  # a good item beside it
    assert store.count() == 2
    assert store.get(id_of(cell(10).digest)) is None
    assert store.get(id_of(cell(11).digest)) is None


def check_a_label_no_item_can_have_matches_nothing(make_store: StoreFactory) -> None:
    """Filters are compared, never interpreted: a label outside the rules (too long, a
    control character, quotes of the store's query language) finds nothing."""
    store, _ = filled(make_store, ["a", "b"])
    for label in ["", "a" * (MAX_LABEL_CHARS + 1), "a\n", 'a" or label != "', "a' OR 1=1 --"]:
        assert store.items(label, 10, None) == []
        assert store.count(label) == 0
        assert store.search(codes_for([0])[0], 2, label) == []


def check_the_writer_reads_its_writes_at_once(make_store: StoreFactory) -> None:
    store, _ = filled(make_store, ["a", "b", "a"])
    added = store.add([cell(7, "c")], codes_for([7]), V1)[0].item
    nearest = store.search(codes_for([7])[0], 1, None)
    assert [n.id for n in nearest] == [added.id]
    assert nearest[0].label == "c"
    assert nearest[0].distance == pytest.approx(0.0, abs=1e-5)
    assert [n.id for n in store.search(codes_for([7])[0], 3, "c")] == [added.id]
    assert store.items("c", 10, None) == [added]


# Reading and deleting --------------------------------------------------------------------


def check_unknown_ids_are_absent(make_store: StoreFactory) -> None:
    store, added = filled(make_store, ["a"])
    unknown = (added[0].item.id + 12345) % (1 << 53)
    assert store.get(unknown) is None
    assert store.image(unknown) is None
    assert store.delete(unknown) is False
    assert store.count() == 1


def check_delete_removes_the_item_from_every_answer(make_store: StoreFactory) -> None:
    labels = ["a", "b", "a", "b", "c"]
    store, added = filled(make_store, labels)
    gone = added[2].item  # label "a"
    assert store.delete(gone.id) is True
    assert store.get(gone.id) is None
    assert store.image(gone.id) is None
    assert store.delete(gone.id) is False
    assert gone.id not in [item.id for item in store.items(None, 100, None)]
    assert gone.id not in [item.id for item in store.items("a", 100, None)]
    assert store.count() == 4
    assert store.count("a") == 1
    assert store.labels() == {"a": 1, "b": 2, "c": 1}
    own_code = codes_for([2])[0]
    assert gone.id not in [n.id for n in store.search(own_code, 10, None)]
    assert gone.id not in [n.id for n in store.search(own_code, 10, "a")]
    # The last item of a label takes the label with it.
    store.delete(added[4].item.id)
    assert store.labels() == {"a": 1, "b": 2}
    assert store.search(own_code, 5, "c") == []


def check_listing_pages_by_cursor(make_store: StoreFactory) -> None:
    labels = ["a" if n % 3 else "b" for n in range(23)]
    store, added = filled(make_store, labels)
    every = sorted(result.item.id for result in added)
    seen, after = [], None
    while page := store.items(None, 5, after):
        assert len(page) <= 5
        seen += [item.id for item in page]
        after = page[-1].id
    assert seen == every  # ascending, complete, nothing twice
    only_b = sorted(r.item.id for r in added if r.item.label == "b")
    seen, after = [], None
    while page := store.items("b", 3, after):
        assert {item.label for item in page} == {"b"}
        seen += [item.id for item in page]
        after = page[-1].id
    assert seen == only_b
    assert [item.id for item in store.items(None, 4, every[10])] == every[11:15]
    assert store.items(None, 0, None) == []
    assert store.items(None, 5, every[-1]) == []
    assert store.items("no such label", 5, None) == []
    listed = store.items(None, 1, None)[0]
    assert listed == store.get(listed.id)


def check_counts_and_labels(make_store: StoreFactory) -> None:
    labels = ["parasitized"] * 4 + ["uninfected"] * 3 + ["odd one"]
    store, _ = filled(make_store, labels)
    assert store.count() == 8
    assert store.count("parasitized") == 4
    assert store.count("odd one") == 1
    assert store.count("never used") == 0
    assert store.labels() == {"parasitized": 4, "uninfected": 3, "odd one": 1}


# Searching -------------------------------------------------------------------------------


def check_search_is_exact_within_a_label(make_store: StoreFactory) -> None:
    """A filtered search answers the label's own nearest cells, however far they are and
    however many other cells are nearer (never "top k, then filter")."""
    labels = ["common"] * 40 + ["rare"] * 3 + ["mid"] * 12
    store, added = filled(make_store, labels)
    ids = np.array([a.item.id for a in added])
    codes = codes_for(range(len(labels)))
    label_array = np.array(labels)
    queries = np.random.default_rng(99).normal(size=(6, DIMENSION)).astype(np.float32)
    for query in queries:
        for label, k in ((None, 5), ("common", 5), ("rare", 5), ("mid", 4), ("rare", 1)):
            rows = np.ones(len(labels), bool) if label is None else label_array == label
            expected = brute_force(codes[rows], ids[rows], query, k, "cosine")
            found = store.search(query, k, label)
            assert [n.id for n in found] == [i for i, _ in expected], (label, k)
            assert [n.distance for n in found] == pytest.approx([d for _, d in expected], abs=1e-4)
            if label is not None:
                assert {n.label for n in found} == {label}
    assert len(store.search(queries[0], 50, "rare")) == 3  # k beyond the label: all of it
    assert len(store.search(queries[0], 500, None)) == len(labels)
    assert store.search(queries[0], 5, "no such label") == []


def check_search_in_an_l2_space_reports_euclidean_distance(make_store: StoreFactory) -> None:
    labels = ["a", "b"] * 6
    store, added = filled(make_store, labels, space=L2_SPACE)
    codes = codes_for(range(len(labels)), L2_SPACE)
    ids = [a.item.id for a in added]
    query = codes[3] + 0.25
    expected = brute_force(codes, ids, query, 4, "l2")
    found = store.search(query, 4, None)
    assert [n.id for n in found] == [i for i, _ in expected]
    assert [n.distance for n in found] == pytest.approx([d for _, d in expected], abs=1e-4)


# Code spaces -----------------------------------------------------------------------------


def check_adding_to_a_space_neither_active_nor_open_is_refused(make_store: StoreFactory) -> None:
    store, _ = filled(make_store, ["a", "b"])
    with pytest.raises(StaleSpaceError):
        store.add([cell(10)], codes_for([10], V2), V2)  # never opened
    assert store.count() == 2
    store.open_space(V2)
    store.add([cell(10)], codes_for([10], V2), V2)  # being filled: accepted
    assert store.count() == 3
    store.activate(V2)
    with pytest.raises(StaleSpaceError):
        store.add([cell(11)], codes_for([11]), V1)  # replaced
    assert store.count() == 3
    assert store.get(id_of(cell(11).digest)) is None


def check_a_new_space_is_filled_then_switched_to(make_store: StoreFactory) -> None:
    labels = ["a", "b", "a", "b", "a", "c"]
    store, added = filled(make_store, labels)
    ids = [a.item.id for a in added]
    store.open_space(V2)
    store.open_space(V2)  # idempotent
    assert store.active_space() == V1
    assert store.code_count(V2) == 0
    # Cells added while the new space fills get codes in the active one: still missing.
    late = store.add([cell(20, "c")], codes_for([20]), V1)[0].item
    # A cell deleted before its new code is stored is skipped.
    store.delete(ids[1])
    missing: dict[int, bytes] = {}
    while batch := store.missing_codes(V2, 2):
        assert len(batch) <= 2
        fresh = [(item_id, png) for item_id, png in batch if item_id not in missing]
        if not fresh:
            break
        missing.update(fresh)
        numbers = [ids.index(item_id) if item_id in ids else 20 for item_id, _ in fresh]
        store.put_codes(V2, [item_id for item_id, _ in fresh], codes_for(numbers, V2))
    expected = {item_id for item_id in ids if item_id != ids[1]} | {late.id}
    assert set(missing) == expected
    assert missing[late.id] == store.image(late.id)
    store.put_codes(V2, [ids[1]], codes_for([1], V2))  # deleted meanwhile: skipped
    assert store.code_count(V2) == len(expected)
    assert store.missing_codes(V2, 10) == []
    # Searches stay in the old space until the switch, then use only the new one.
    assert [n.id for n in store.search(codes_for([0])[0], 1, None)] == [ids[0]]
    store.activate(V2)
    assert store.active_space() == V2
    nearest = store.search(codes_for([4], V2)[0], 1, None)
    assert [n.id for n in nearest] == [ids[4]]
    assert nearest[0].distance == pytest.approx(0.0, abs=1e-5)
    assert store.search(codes_for([20], V2)[0], 1, "c")[0].id == late.id
    assert store.code_count(V1) == 0  # the old space's codes are gone
    with pytest.raises(ValueError):
        store.search(codes_for([0])[0], 1, None)  # a code of the old dimension


def digest_asking_for(item_id: int, tail: int) -> bytes:
    """A digest whose id (its first 53 bits) is ``item_id``: ids in a chosen order."""
    return (item_id << (64 - 53)).to_bytes(8, "big") + tail.to_bytes(24, "big")


def check_missing_codes_finds_cells_added_below_its_cursor(make_store: StoreFactory) -> None:
    store = make_store()
    store.open_space(V1)
    store.activate(V1)
    first = [
        NewItem(png=cell(n).png, digest=digest_asking_for(100 * n, n), label="a")
        for n in (1, 2, 3, 4)
    ]
    store.add(first, codes_for([1, 2, 3, 4]), V1)
    store.open_space(V2)
    batch = store.missing_codes(V2, 2)
    assert [item_id for item_id, _ in batch] == [100, 200]
    store.put_codes(V2, [100, 200], codes_for([1, 2], V2))
    # A cell arrives with an id below where the filling has got to.
    low = NewItem(png=cell(5).png, digest=digest_asking_for(50, 5), label="a")
    store.add([low], codes_for([5]), V1)
    found = {}
    while batch := store.missing_codes(V2, 2):
        fresh = {item_id: png for item_id, png in batch if item_id not in found}
        if not fresh:
            break
        found.update(fresh)
        numbers = [{300: 3, 400: 4, 50: 5}[item_id] for item_id in fresh]
        store.put_codes(V2, list(fresh), codes_for(numbers, V2))
    assert set(found) == {300, 400, 50}
    assert found[50] == low.png
    assert store.code_count(V2) == 5


# Leases ----------------------------------------------------------------------------------


def check_claim_is_a_lease(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.claim("reencode", "worker-1", 60) is True
    assert store.claim("reencode", "worker-2", 60) is False
    assert store.claim("reencode", "worker-1", 60) is True  # renewed by its owner
    assert store.claim("other job", "worker-2", 60) is True
    other = make_store(same_as=store)
    assert other.claim("reencode", "worker-2", 60) is False  # the lease is the gallery's
    assert store.claim("short", "worker-1", 0.2) is True
    time.sleep(0.5)  # past its expiry
    assert other.claim("short", "worker-2", 60) is True
    assert store.claim("short", "worker-1", 60) is False


# Several stores on one gallery ----------------------------------------------------------


def check_refresh_shows_writes_of_another_store(make_store: StoreFactory) -> None:
    writer, added = filled(make_store, ["a", "b", "a"])
    reader = make_store(same_as=writer)
    assert reader.active_space() == V1
    assert reader.count() == 3
    assert [n.id for n in reader.search(codes_for([1])[0], 1, None)] == [added[1].item.id]
    new = writer.add([cell(8, "b")], codes_for([8]), V1)[0].item
    writer.delete(added[0].item.id)
    reader.refresh()
    assert reader.get(new.id) == new
    assert reader.image(new.id) == cell(8).png
    assert reader.get(added[0].item.id) is None
    assert [n.id for n in reader.search(codes_for([8])[0], 1, "b")] == [new.id]
    assert added[0].item.id not in [n.id for n in reader.search(codes_for([0])[0], 5, None)]
    assert reader.labels() == {"a": 1, "b": 2}
    # A switch of space by one store reaches the other at its refresh.
    writer.open_space(V2)
    ids = [item.id for item in writer.items(None, 10, None)]
    numbers = {added[2].item.id: 2, added[1].item.id: 1, new.id: 8}
    writer.put_codes(V2, ids, codes_for([numbers[i] for i in ids], V2))
    writer.activate(V2)
    reader.refresh()
    assert reader.active_space() == V2
    assert [n.id for n in reader.search(codes_for([8], V2)[0], 1, None)] == [new.id]
    # And the reader's writes reach the writer.
    from_reader = reader.add([cell(9, "a")], codes_for([9], V2), V2)[0].item
    writer.refresh()
    assert writer.get(from_reader.id) == from_reader
    assert [n.id for n in writer.search(codes_for([9], V2)[0], 1, "a")] == [from_reader.id]


def check_delete_offline_except_keeps_added_items(make_store: StoreFactory) -> None:
    store = make_store()
    store.open_space(V1)
    store.activate(V1)
    offline = store.add([cell(n, "a", source="offline") for n in range(5)], codes_for(range(5)), V1)
    added = store.add([cell(n, "a") for n in (5, 6)], codes_for([5, 6]), V1)
    keep = {offline[0].item.id, offline[3].item.id}
    assert store.delete_offline_except(keep) == 3
    remaining = {item.id for item in store.items(None, 100, None)}
    assert remaining == keep | {a.item.id for a in added}
    assert {store.get(i).source for i in keep} == {"offline"}
    found = {n.id for n in store.search(codes_for([1])[0], 10, None)}
    assert found == remaining
    assert store.count("a") == 4
    assert store.delete_offline_except(keep) == 0
