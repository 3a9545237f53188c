"""MilvusGalleryStore where it differs from the embedded store: its URL, a Milvus that is
down, images spanning several rows, writes cut short (no transactions), other replicas'
activations, HNSW search on indexed segments, and a Milvus killed and restarted.

What every store promises is checked by ``test_store_behaviour.py``; these run against the
same real Milvus server (``milvus_server.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from app.gallery.milvus_store import (
    CHUNK_BYTES,
    MAX_PNG_BYTES,
    MilvusGalleryStore,
    MilvusLocation,
    MilvusUnavailableError,
    parse_milvus_url,
)
from app.gallery.store import (
    PNG_SIGNATURE,
    CodeSpace,
    NewItem,
    StaleSpaceError,
    content_digest,
    id_of,
    normalised,
)
from tests.app.gallery.milvus_server import (
    MilvusServer,
    MilvusUnavailable,
    free_ports,
    milvus_store_factory,
    replica_of,
    shared_server,
    start_server,
    stop_shared_server,
)
from tests.app.gallery.store_behaviour import V1, V2, cell, codes_for, filled


@pytest.fixture(scope="session")
def milvus() -> Iterator[MilvusServer]:
    server = shared_server()  # skips, saying why, where no server can start
    yield server
    stop_shared_server()


def fresh(_: Any = None) -> MilvusGalleryStore:
    return milvus_store_factory()


# Without a server --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("milvus://db:19530", MilvusLocation("http://db:19530", "", "cellsign")),
        ("milvus://db", MilvusLocation("http://db:19530", "", "cellsign")),
        ("milvus://10.0.0.5:1234/team_a", MilvusLocation("http://10.0.0.5:1234", "", "team_a")),
        ("milvus://u:p%40ss@db:1/g/", MilvusLocation("http://db:1", "u:p@ss", "g")),
        ("milvus://[::1]:19530", MilvusLocation("http://[::1]:19530", "", "cellsign")),
    ],
)
def test_gallery_urls_name_server_credentials_and_prefix(
    url: str, expected: MilvusLocation
) -> None:
    assert parse_milvus_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://db:19530",  # not milvus://
        "milvus://",  # no host
        "milvus://db:99999",  # no such port
        "milvus://db:port",
        "milvus://db/1gallery",  # a prefix starts with a letter
        "milvus://db/a-b",  # collection names: letters, digits, _
        "milvus://db/a/b",
        "milvus://db/" + "a" * 33,
        "milvus://db?prefix=x",
    ],
)
def test_bad_gallery_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_milvus_url(url.replace("://", "://admin:hunter2@", 1))
    assert "hunter2" not in str(raised.value)


def test_the_display_form_hides_credentials() -> None:
    location = parse_milvus_url("milvus://admin:hunter2@db:19530/g")
    assert location.display == "milvus://db:19530/g"


def test_a_milvus_that_does_not_answer_is_unavailable() -> None:
    (port,) = free_ports(1)  # nothing listens there
    store = MilvusGalleryStore(f"milvus://admin:hunter2@127.0.0.1:{port}/g", timeout_s=1)
    for call in (store.active_space, store.count, lambda: store.get(1)):
        with pytest.raises(MilvusUnavailableError) as raised:
            call()
        assert f"milvus://127.0.0.1:{port}/g" in str(raised.value)
        assert "hunter2" not in str(raised.value)
    store.close()


# Images --------------------------------------------------------------------------------------


def blob(size: int, seed: int) -> NewItem:
    """A cell whose stored PNG has ``size`` bytes (the store keeps the bytes it is given;
    only the signature is looked at)."""
    noise = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    data = PNG_SIGNATURE + noise[len(PNG_SIGNATURE) :]
    return NewItem(png=data, digest=content_digest("RGB", (size, 1), data), label="big")


def test_images_spanning_several_rows_come_back_whole(milvus: MilvusServer) -> None:
    store, _ = filled(fresh, [])
    sizes = [CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 300_000, MAX_PNG_BYTES]
    items = [blob(size, seed) for seed, size in enumerate(sizes)]
    added = store.add(items, codes_for(range(len(items))), V1)
    for item, result in zip(items, added, strict=True):
        assert store.image(result.item.id) == item.png
    too_big = blob(MAX_PNG_BYTES + 1, 99)
    with pytest.raises(ValueError):
        store.add([too_big], codes_for([99]), V1)
    assert store.count() == len(sizes)


# Writes cut short ------------------------------------------------------------------------------


def test_an_add_cut_short_before_its_item_row_is_invisible_until_retried(
    milvus: MilvusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the image and the code were written, before the item row:
    the code is in the space, yet no answer shows the cell; adding it again completes it."""
    store, added = filled(fresh, ["a"])
    real_upsert = store._upsert

    def killed_before_commit(client: Any, name: str, rows: Any, size_of: Any) -> None:
        if name == store.items_name:
            raise KeyboardInterrupt  # stands for the kill: nothing after it runs
        real_upsert(client, name, rows, size_of)

    monkeypatch.setattr(store, "_upsert", killed_before_commit)
    late = cell(5, "b")
    with pytest.raises(KeyboardInterrupt):
        store.add([late], codes_for([5]), V1)
    monkeypatch.undo()
    assert store.code_count(V1) == 2  # the orphan code is there...
    late_id = id_of(late.digest)
    assert store.get(late_id) is None  # ...but nothing answers with it
    assert store.image(late_id) is None
    assert store.count() == 1
    assert store.labels() == {"a": 1}
    assert [item.id for item in store.items(None, 10, None)] == [added[0].item.id]
    assert [n.id for n in store.search(codes_for([5])[0], 5, None)] == [added[0].item.id]
    assert store.search(codes_for([5])[0], 5, "b") == []
    retried = store.add([late], codes_for([5]), V1)[0]
    assert retried.created and retried.item.id == late_id
    assert [n.id for n in store.search(codes_for([5])[0], 1, "b")] == [late_id]
    assert store.image(late_id) == late.png


def test_a_delete_cut_short_after_its_item_row_hides_the_item(
    milvus: MilvusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, added = filled(fresh, ["a", "a"])
    gone = added[0].item.id
    client = store._client()
    real_delete = client.delete
    calls = []

    def killed_after_first_delete(name: str, **kwargs: Any) -> Any:
        calls.append(name)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_delete(name, **kwargs)

    monkeypatch.setattr(client, "delete", killed_after_first_delete)
    with pytest.raises(KeyboardInterrupt):
        store.delete(gone)
    monkeypatch.undo()
    assert calls[0] == store.items_name  # the item row went first
    assert store.code_count(V1) == 2  # its code stayed behind
    assert store.get(gone) is None
    assert store.image(gone) is None
    assert [n.id for n in store.search(codes_for([0])[0], 5, None)] == [added[1].item.id]
    assert store.delete(gone) is False


# Other replicas ---------------------------------------------------------------------------------


def fill(store: MilvusGalleryStore, space: CodeSpace, numbers: dict[int, int]) -> None:
    """Give every item a code in ``space``; ``numbers`` maps ids to their cells' numbers."""
    while batch := store.missing_codes(space, 100):
        ids = [item_id for item_id, _ in batch]
        store.put_codes(space, ids, codes_for([numbers[i] for i in ids], space))


def test_a_space_dropped_by_another_replica_is_followed(milvus: MilvusServer) -> None:
    """Replica B switches the gallery to V2 (dropping V1) while A still searches V1: A's
    search answers nothing and A now names V2, so its caller encodes the query again; A's
    adds with V1 codes are refused."""
    a, added = filled(fresh, ["a", "b"])
    b = replica_of(a)
    b.open_space(V2)
    fill(b, V2, {result.item.id: n for n, result in enumerate(added)})
    b.activate(V2)
    assert a.active_space() == V1  # not refreshed yet
    assert a.search(codes_for([0])[0], 1, None) == []
    assert a.active_space() == V2
    assert [n.id for n in a.search(codes_for([1], V2)[0], 1, None)] == [added[1].item.id]
    with pytest.raises(StaleSpaceError):
        a.add([cell(7)], codes_for([7]), V1)


def test_an_add_overtaken_by_an_activation_is_refused(
    milvus: MilvusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica activates V2 after this add wrote its V1 code and before its item
    row: the cell would have no code in the space searches use, so the add fails as stale
    and stores no item (the caller encodes it with V2 and retries)."""
    store, added = filled(fresh, ["a"])
    other = replica_of(store)
    other.open_space(V2)
    fill(other, V2, {added[0].item.id: 0})
    real_upsert = store._upsert

    def activation_meanwhile(client: Any, name: str, rows: Any, size_of: Any) -> None:
        real_upsert(client, name, rows, size_of)
        if name == store.space_name(V1):
            other.activate(V2)

    monkeypatch.setattr(store, "_upsert", activation_meanwhile)
    late = cell(3, "a")
    with pytest.raises(StaleSpaceError):
        store.add([late], codes_for([3]), V1)
    monkeypatch.undo()
    assert store.get(id_of(late.digest)) is None
    again = store.add([late], codes_for([3], V2), V2)[0]
    assert again.created
    assert [n.id for n in store.search(codes_for([3], V2)[0], 1, None)] == [again.item.id]


def test_a_lease_holder_that_lost_the_race_reads_back_the_winner(milvus: MilvusServer) -> None:
    store = fresh()
    other = replica_of(store)
    assert store.claim("reencode", "one", 60)
    # "two" wrote over the lease after "one" had read it free (the race claim admits):
    # the read-back tells "one" that it lost.
    other._upsert(
        other._client(),
        other.meta_name,
        [{"key": "claim:reencode", "value": '{"owner": "two", "until": 1e12}', "_v": b"\0"}],
        len,
    )
    assert store.claim("reencode", "one", 60) is False
    assert other.claim("reencode", "two", 60) is True


# Searching indexed segments ----------------------------------------------------------------------


def wait_until_indexed(store: MilvusGalleryStore, space: CodeSpace, rows: int) -> None:
    """Flush the space's codes into sealed segments and wait until the query node serves
    them through their HNSW index (growing segments are searched exhaustively)."""
    client = store._client()
    name = store.space_name(space)
    client.flush(name)
    deadline = time.monotonic() + 300
    while True:
        segments = client._get_connection().get_query_segment_info(name)
        served = sum(segment.num_rows for segment in segments if segment.index_name)
        if served == rows:
            return
        assert time.monotonic() < deadline, "the sealed segments were never served indexed"
        time.sleep(0.5)


@pytest.mark.slow
def test_hnsw_search_keeps_recall_and_is_exact_within_a_small_label(
    milvus: MilvusServer,
) -> None:
    """On an HNSW-indexed segment: recall@10 >= 0.95 without a filter; with a filter to a
    label of 2% of the cells, exactly the brute-force answer (Milvus searches a filter that
    leaves few rows exhaustively)."""
    space = CodeSpace(encoder_version=1, dimension=64, metric="cosine")
    store = fresh()
    store.open_space(space)
    store.activate(space)
    count = 3000
    rng = np.random.default_rng(7)
    codes = rng.standard_normal((count, 64)).astype(np.float32)
    labels = np.array(["rare" if i % 50 == 0 else "common" for i in range(count)])
    items = [
        NewItem(PNG_SIGNATURE + i.to_bytes(4, "big"), content_digest("L", (i, 1), b""), label)
        for i, label in enumerate(labels)
    ]
    batches = range(0, count, 500)
    added = [store.add(items[b : b + 500], codes[b : b + 500], space) for b in batches]
    ids = np.array([result.item.id for batch in added for result in batch])
    wait_until_indexed(store, space, count)
    rows = normalised(codes, "cosine")
    rare = np.flatnonzero(labels == "rare")
    recalls = []
    for query in rng.standard_normal((40, 64)):
        similarity = rows @ normalised(query[np.newaxis], "cosine")[0]
        best = set(ids[np.argsort(-similarity)[:10]].tolist())
        recalls.append(len(best & {n.id for n in store.search(query, 10, None)}) / 10)
        rare_best = ids[rare[np.argsort(-similarity[rare])[:10]]].tolist()
        assert [n.id for n in store.search(query, 10, "rare")] == rare_best
    assert np.mean(recalls) >= 0.95


# A Milvus killed and started again ---------------------------------------------------------


@pytest.mark.slow
def test_a_store_outlives_a_milvus_crash_and_keeps_what_it_acknowledged() -> None:
    try:
        server = start_server()
    except MilvusUnavailable as exc:
        pytest.skip(f"no Milvus server: {exc}")
    try:
        store = MilvusGalleryStore(server.url("crash"), timeout_s=3)
        store.open_space(V1)
        store.activate(V1)
        kept = store.add([cell(n, "a") for n in range(3)], codes_for(range(3)), V1)
        server.kill()  # kill -9 of every Milvus process right after the add returned
        with pytest.raises(MilvusUnavailableError):
            store.count()
        server = start_server(again=server)
        assert store.count() == 3
        assert store.active_space() == V1
        for number, result in enumerate(kept):
            assert store.get(result.item.id) == result.item
            assert [n.id for n in store.search(codes_for([number])[0], 1, "a")] == [result.item.id]
        store.close()
    finally:
        server.stop()
