"""The embedded store beyond the shared behaviour: its directory, input checks, durability
settings, several threads and several processes on one gallery, and an unfinished write
killed with SIGKILL. (The promises every store keeps are in ``store_behaviour.py``.)"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.gallery import sqlite_store
from app.gallery.sqlite_store import DATABASE_FILE, GalleryDirectoryError, SqliteGalleryStore
from app.gallery.store import CodeSpace, StaleSpaceError, id_of
from tests.app.gallery.store_behaviour import DIMENSION, V1, V2, cell, codes_for
from tests.paths import REPO_ROOT

WRITER = """
import json, sys
from pathlib import Path
from app.gallery.sqlite_store import SqliteGalleryStore
from tests.app.gallery.store_behaviour import V1, cell, codes_for

store = SqliteGalleryStore(Path(sys.argv[1]))
numbers = json.loads(sys.argv[2])
batch = int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()  # both writers start together
for start in range(0, len(numbers), batch):
    chunk = numbers[start : start + batch]
    for result in store.add([cell(n) for n in chunk], codes_for(chunk), V1):
        print(json.dumps([result.item.id, result.created]), flush=True)
"""


@pytest.fixture
def store(tmp_path: Path):
    opened = SqliteGalleryStore(tmp_path / "gallery")
    opened.open_space(V1)
    opened.activate(V1)
    yield opened
    opened.close()


def writer(directory: Path, numbers: list[int], batch: int) -> subprocess.Popen[str]:
    """A process adding ``numbers``' cells, ``batch`` per add, once it reads a line."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), json.dumps(numbers), str(batch)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready", process.stderr.read()
    return process


def raw(directory: Path) -> sqlite3.Connection:
    return sqlite3.connect(directory / DATABASE_FILE)


# The directory ---------------------------------------------------------------------------


def test_the_directory_is_made_with_its_parents(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b" / "gallery"
    store = SqliteGalleryStore(directory)
    assert (directory / DATABASE_FILE).is_file()
    store.close()


def test_a_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(GalleryDirectoryError, match="cannot be created"):
        SqliteGalleryStore(blocker / "gallery")
    with pytest.raises(GalleryDirectoryError, match="not a directory|cannot be created"):
        SqliteGalleryStore(blocker)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "gallery"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(GalleryDirectoryError, match="not writable"):
            SqliteGalleryStore(directory)
    finally:
        directory.chmod(0o700)


def test_a_file_that_is_not_a_gallery_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "gallery"
    directory.mkdir()
    (directory / DATABASE_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(GalleryDirectoryError, match="gallery.*not a database"):
        SqliteGalleryStore(directory)
    assert (directory / DATABASE_FILE).read_bytes() == b"this is not a database" * 100


def test_a_gallery_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    SqliteGalleryStore(tmp_path).close()
    with raw(tmp_path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(GalleryDirectoryError, match="newer"):
        SqliteGalleryStore(tmp_path)


def switch_to_wal_together(path: Path, together: threading.Barrier) -> str:
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        together.wait()
        sqlite_store._set_wal_mode(db)
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        db.close()


def test_workers_switching_a_new_gallery_to_wal_at_once_all_succeed(tmp_path: Path) -> None:
    """Workers start together on an empty GALLERY_DIR: while one switches the new file to
    WAL, SQLite answers another's switch "database is locked" at once, without waiting out
    the busy timeout (without the retry, about one round in six failed here)."""
    for attempt in range(60):
        together = threading.Barrier(4)
        with ThreadPoolExecutor(4) as pool:
            modes = [
                pool.submit(switch_to_wal_together, tmp_path / f"{attempt}.sqlite3", together)
                for _ in range(4)
            ]
            assert {mode.result() for mode in modes} == {"wal"}


def test_writes_are_durable_wal_commits(store: SqliteGalleryStore) -> None:
    with store._connection() as db:  # noqa: SLF001 - the connection settings are the point
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000


# Checks before writing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"label": ""},
        {"label": "x" * 65},
        {"label": "tab\there"},
        {"label": "line\nbreak"},
        {"label": "\ud800"},
        {"note": "n" * 257},
        {"note": "bell\x07"},
        {"png": b"GIF89a not a png"},
        {"digest": b"short"},
        {"source": "elsewhere"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_bad_item_is_refused_and_nothing_is_stored(
    store: SqliteGalleryStore, change: dict[str, object]
) -> None:
    good = cell(1, "a")
    bad = replace(cell(2, "b"), **change)
    with pytest.raises(ValueError):
        store.add([good, bad], codes_for([1, 2]), V1)
    assert store.count() == 0
    assert store.get(id_of(good.digest)) is None


@pytest.mark.parametrize(
    "codes",
    [
        np.full((1, DIMENSION), np.nan, np.float32),
        np.full((1, DIMENSION), np.inf, np.float32),
        np.ones((2, DIMENSION), np.float32),
        np.ones((1, DIMENSION, 1), np.float32),
        "not numbers",
    ],
    ids=["nan", "inf", "two codes for one cell", "three dimensions", "text"],
)
def test_bad_codes_are_refused(store: SqliteGalleryStore, codes: object) -> None:
    with pytest.raises(ValueError):
        store.add([cell(1)], codes, V1)  # type: ignore[arg-type]
    assert store.count() == 0


def test_bad_arguments_to_reads_answer_nothing(store: SqliteGalleryStore) -> None:
    store.add([cell(1, "a")], codes_for([1]), V1)
    for item_id in (-1, 1 << 53, 1 << 64, True, "1", 1.0):
        assert store.get(item_id) is None  # type: ignore[arg-type]
        assert store.image(item_id) is None  # type: ignore[arg-type]
        assert store.delete(item_id) is False  # type: ignore[arg-type]
    assert store.items("\x00", 5, None) == []
    assert store.items(None, 5, 1 << 64) == []  # a cursor past every id
    assert store.items(None, 5, 1 << 60) == []
    assert store.count("x" * 1000) == 0
    assert store.search(codes_for([1])[0], 5, "\ud800") == []
    with pytest.raises(ValueError):
        store.items(None, -1, None)
    with pytest.raises(ValueError):
        store.search(codes_for([1])[0], -1, None)
    with pytest.raises(ValueError):
        store.search(np.ones(DIMENSION + 2, np.float32), 5, None)
    with pytest.raises(ValueError):
        store.search(np.full(DIMENSION, np.nan, np.float32), 5, None)
    with pytest.raises(ValueError):
        store.claim("job", "owner", float("inf"))
    with pytest.raises(ValueError):
        store.claim("", "owner", 10)
    with pytest.raises(ValueError):
        store.delete_offline_except({-5})
    assert store.count() == 1


def test_spaces_that_were_never_opened_are_stale(store: SqliteGalleryStore) -> None:
    store.add([cell(1)], codes_for([1]), V1)
    with pytest.raises(StaleSpaceError):
        store.activate(V2)
    with pytest.raises(StaleSpaceError):
        store.put_codes(V2, [id_of(cell(1).digest)], codes_for([1], V2))
    with pytest.raises(StaleSpaceError):
        store.missing_codes(V2, 5)
    assert store.code_count(V2) == 0
    assert store.active_space() == V1
    with pytest.raises(ValueError):
        store.open_space(CodeSpace(1, 0))


def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = SqliteGalleryStore(tmp_path)
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.count()
    with pytest.raises(RuntimeError, match="closed"):
        store.search(np.ones(DIMENSION, np.float32), 1, None)


# The change log and the old space --------------------------------------------------------


def test_a_store_behind_the_pruned_log_rebuilds(
    store: SqliteGalleryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = SqliteGalleryStore(store.directory)
    monkeypatch.setattr(sqlite_store, "KEEP_CHANGES", 3)
    for number in range(20):
        store.add([cell(number, "a")], codes_for([number]), V1)
    last = id_of(cell(19).digest)
    store.delete(last)
    with raw(store.directory) as db:
        assert db.execute("SELECT count(*) FROM changes").fetchone()[0] <= 7
    reader.refresh()
    assert reader.count() == 19
    found = {n.id for n in reader.search(codes_for([0])[0], 50, None)}
    assert found == {id_of(cell(n).digest) for n in range(19)}
    reader.close()


def test_an_interrupted_purge_of_an_old_space_resumes(store: SqliteGalleryStore) -> None:
    store.add([cell(n) for n in range(5)], codes_for(range(5)), V1)
    store.open_space(V2)
    store.put_codes(V2, [id_of(cell(n).digest) for n in range(5)], codes_for(range(5), V2))
    with raw(store.directory) as db:  # as if killed between the switch and the purge
        db.execute("UPDATE spaces SET status = 'dropped' WHERE key != '1:8:cosine'")
    assert store.code_count(V2) == 5
    SqliteGalleryStore(store.directory).close()
    assert store.code_count(V2) == 0
    with raw(store.directory) as db:
        assert db.execute("SELECT key FROM spaces").fetchall() == [("1:8:cosine",)]


# Threads and processes ---------------------------------------------------------------------


def test_a_writer_in_another_process_is_waited_for(store: SqliteGalleryStore) -> None:
    holder = sqlite3.connect(store.directory / DATABASE_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write transaction, in progress
    outcome: list[object] = []
    adding = threading.Thread(
        target=lambda: outcome.append(store.add([cell(1)], codes_for([1]), V1))
    )
    adding.start()
    time.sleep(0.3)
    assert not outcome  # still waiting for the lock, not failed
    holder.execute("COMMIT")
    holder.close()
    adding.join(timeout=30)
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException)
    assert store.count() == 1


def test_many_threads_share_one_store(store: SqliteGalleryStore) -> None:
    def work(number: int) -> int:
        label = "even" if number % 2 == 0 else "odd"
        added = store.add([cell(number, label)], codes_for([number]), V1)[0].item
        assert store.search(codes_for([number])[0], 1, label)[0].id == added.id
        assert store.get(added.id) == added
        store.items(label, 10, None)
        return added.id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(work, range(64)))
    assert len(set(ids)) == 64
    assert store.labels() == {"even": 32, "odd": 32}
    for number, item_id in enumerate(ids):
        assert store.search(codes_for([number])[0], 1, None)[0].id == item_id


def test_two_processes_write_one_gallery_without_loss_or_duplicates(
    store: SqliteGalleryStore,
) -> None:
    # Both writers start with cells 50-149, at the same moment: each must be stored once.
    first = writer(store.directory, [*range(50, 150), *range(50)], batch=1)
    second = writer(store.directory, list(range(50, 200)), batch=7)
    for process in (first, second):
        process.stdin.write("go\n")
        process.stdin.flush()
    answers = []
    for process in (first, second):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
        answers.append([json.loads(line) for line in out.splitlines()])
    assert [len(a) for a in answers] == [150, 150]
    created = [item_id for answer in answers for item_id, was_created in answer if was_created]
    assert sorted(created) == sorted({id_of(cell(n).digest) for n in range(200)})
    store.refresh()
    assert store.count() == 200
    listed = [item.id for item in store.items(None, 1000, None)]
    assert sorted(created) == listed
    for number in range(0, 200, 9):
        nearest = store.search(codes_for([number])[0], 1, None)[0]
        assert nearest.id == id_of(cell(number).digest)
        assert store.image(nearest.id) == cell(number).png
    with raw(store.directory) as db:
        counts = [
            db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("items", "images", "codes")
        ]
    assert counts == [200, 200, 200]


def test_sigkill_during_writes_keeps_every_answered_add_and_no_half(
    store: SqliteGalleryStore,
) -> None:
    process = writer(store.directory, list(range(10_000)), batch=3)
    process.stdin.write("go\n")
    process.stdin.flush()
    answered = []
    assert process.stdout is not None
    while len(answered) < 60:
        answered.append(json.loads(process.stdout.readline())[0])
    process.send_signal(signal.SIGKILL)  # most likely inside a transaction
    process.wait(timeout=30)
    reopened = SqliteGalleryStore(store.directory)
    stored = {item.id for item in reopened.items(None, 100_000, None)}
    assert set(answered) <= stored
    with raw(store.directory) as db:
        for table in ("images", "codes"):
            ids = {row[0] for row in db.execute(f"SELECT id FROM {table}")}
            assert ids == stored, table  # every stored item is whole
    assert reopened.count() == len(stored)
    for item_id in stored:
        assert reopened.image(item_id) is not None
    reopened.close()
