"""The embedded gallery store: one SQLite file under ``GALLERY_DIR``, searched through a
FAISS index (``code_index.py``) that each worker process keeps in memory.

Durability and visibility:

* WAL mode with ``synchronous=FULL``: a commit returns after the log is on disk, so an
  answered ``add`` survives kill -9 and power loss, and an unfinished transaction is
  never seen (SQLite rolls it back when the file is next opened).
* Every write is one ``BEGIN IMMEDIATE`` transaction: it takes the write lock before
  reading, so two writers never deadlock upgrading a read; writers in other processes
  wait (``busy_timeout``) rather than fail.
* Every change to what a search can find is appended to ``changes`` (a monotonic
  ``seq``) in the transaction that made it. ``refresh`` reads the entries after the last
  one this process applied and brings its index up to date; the writing process does the
  same right after its own commit, so it reads its own writes at once. Old entries are
  pruned; a process that fell further behind than what is kept rebuilds its index.

Tables: ``items`` (metadata, listed and counted without touching images), ``images``
(the PNGs, apart so that scans of ``items`` stay small), ``codes`` (one row per space and
item), ``spaces`` (open, active, or dropped and being purged), ``label_counts`` (kept
in the write transactions, so counting a million items reads a few rows), ``state``,
``leases`` and ``changes``.

SQLite objects never cross threads: each call borrows a connection from a pool (one per
concurrent thread at most) and gives it back. A store object belongs to the process that
opened it; a forked child opens its own.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sqlite3
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from app.gallery.code_index import CodeIndex
from app.gallery.store import (
    ID_BITS,
    Added,
    CodeSpace,
    GalleryItem,
    Neighbour,
    NewItem,
    StaleSpaceError,
    check_new_item,
    check_space,
    checked_codes,
    id_of,
    valid_label,
)

logger = logging.getLogger(__name__)

DATABASE_FILE = "gallery.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another process's transaction
KEEP_CHANGES = 100_000  # change-log entries kept for processes catching up
PURGE_CHUNK = 20_000  # codes of a dropped space deleted per transaction
_FETCH_CHUNK = 10_000
_IN_CHUNK = 500  # ids per "IN (...)" (SQLite allows 32,766 parameters)
_ID_LIMIT = 1 << ID_BITS
_MAX_KEY_CHARS = 256  # lease job and owner names

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    label TEXT NOT NULL,
    note TEXT NOT NULL,
    created REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('offline', 'added'))
);
CREATE INDEX IF NOT EXISTS items_by_label ON items (label, id);
CREATE INDEX IF NOT EXISTS items_by_source ON items (source, id);
CREATE TABLE IF NOT EXISTS images (id INTEGER PRIMARY KEY, png BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS codes (
    space TEXT NOT NULL,
    id INTEGER NOT NULL,
    code BLOB NOT NULL,
    PRIMARY KEY (space, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spaces (
    key TEXT PRIMARY KEY,
    encoder_version INTEGER NOT NULL,
    dimension INTEGER NOT NULL,
    metric TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'active', 'dropped'))
);
CREATE TABLE IF NOT EXISTS label_counts (label TEXT PRIMARY KEY, items INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS leases (
    job TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item INTEGER,
    kind TEXT NOT NULL CHECK (kind IN ('add', 'codes', 'delete', 'activate')),
    space TEXT
);
"""


@dataclass
class _SpaceContents:
    """What an index is built from, read in one transaction."""

    last: int
    space: CodeSpace | None = None
    ids: array = field(default_factory=lambda: array("q"))
    numbers: array = field(default_factory=lambda: array("i"))
    names: list[str] = field(default_factory=list)
    codes: np.ndarray | None = None


class GalleryDirectoryError(OSError):
    """``GALLERY_DIR`` cannot hold the gallery (not a directory, not writable, or a
    database this version cannot read)."""


def space_key(space: CodeSpace) -> str:
    return f"{space.encoder_version}:{space.dimension}:{space.metric}"


class SqliteGalleryStore:
    """``GalleryStore`` in ``directory/gallery.sqlite3``; see the module docstring."""

    def __init__(self, directory: Path, seed: int = 0) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DATABASE_FILE
        self._seed = seed
        self._pid = os.getpid()
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._pool_lock = threading.Lock()
        self._closed = False
        self._refresh_lock = threading.Lock()
        self._index: CodeIndex | None = None
        self._seq = 0  # the last change this process's index reflects
        self._fill_cursor: dict[str, int] = {}  # per space: the last id missing_codes gave
        self._prepare_directory()
        try:
            with self._write() as db:
                self._create_schema(db)
        except sqlite3.DatabaseError as error:
            self.close()
            message = f"{self.path} is not a readable gallery: {error}"
            raise GalleryDirectoryError(message) from error
        self._purge_dropped()
        self.refresh()

    # Connections --------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise GalleryDirectoryError(
                f"gallery directory {self.directory} cannot be created: {error.strerror or error}"
            ) from error
        if not self.directory.is_dir():
            raise GalleryDirectoryError(f"gallery directory {self.directory} is not a directory")
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise GalleryDirectoryError(
                f"gallery directory {self.directory} is not writable by this process "
                f"(uid {os.getuid()})"
            )

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # transactions are begun explicitly
                check_same_thread=False,  # the pool hands a connection to one thread at a time
            )
            _set_wal_mode(db)
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as error:
            raise GalleryDirectoryError(f"cannot open the gallery {self.path}: {error}") from error
        return db

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise RuntimeError("the gallery store is closed")
        if os.getpid() != self._pid:
            raise RuntimeError(
                "a SqliteGalleryStore was opened before a fork: open one in each process"
            )
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            db = self._open()
        try:
            yield db
        finally:
            with self._pool_lock:
                if self._closed:
                    db.close()
                else:
                    self._idle.put(db)

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._connection() as db:
            db.execute(begin)
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._transaction("BEGIN IMMEDIATE")

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._transaction("BEGIN")  # one snapshot for every statement inside

    def _create_schema(self, db: sqlite3.Connection) -> None:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise GalleryDirectoryError(
                f"{self.path} was written by a newer cellsign (schema {version}, this one "
                f"reads {SCHEMA_VERSION})"
            )
        for statement in _SCHEMA.split(";"):  # executescript would commit midway
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            while True:
                try:
                    self._idle.get_nowait().close()
                except queue.Empty:
                    break
        self._index = None

    # Spaces -------------------------------------------------------------------------

    def active_space(self) -> CodeSpace | None:
        """The space this process's index searches (after a switch by another process,
        the new one from the next ``refresh``)."""
        index = self._index
        return index.space if index is not None else None

    def _status(self, db: sqlite3.Connection, space: CodeSpace) -> str | None:
        row = db.execute("SELECT status FROM spaces WHERE key = ?", (space_key(space),)).fetchone()
        return row[0] if row else None

    def open_space(self, space: CodeSpace) -> None:
        check_space(space)
        with self._write() as db:
            status = self._status(db, space)
            if status == "active" or status == "open":
                return
            db.execute(
                "INSERT INTO spaces (key, encoder_version, dimension, metric, status) "
                "VALUES (?, ?, ?, ?, 'open') ON CONFLICT (key) DO UPDATE SET status = 'open'",
                (space_key(space), space.encoder_version, space.dimension, space.metric),
            )

    def activate(self, space: CodeSpace) -> None:
        """Switch searches to ``space`` (opened before, or already active) in one
        transaction; then purge every other space's codes, a chunk per transaction."""
        check_space(space)
        key = space_key(space)
        with self._write() as db:
            status = self._status(db, space)
            if status is None or status == "dropped":
                raise StaleSpaceError(f"space {key} was never opened, or was dropped")
            if status == "open":
                db.execute("UPDATE spaces SET status = 'dropped' WHERE key != ?", (key,))
                db.execute("UPDATE spaces SET status = 'active' WHERE key = ?", (key,))
                db.execute(
                    "INSERT INTO state (name, value) VALUES ('active', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (key,),
                )
                db.execute("INSERT INTO changes (kind, space) VALUES ('activate', ?)", (key,))
        self._catch_up()
        self._purge_dropped()

    def _purge_dropped(self) -> None:
        """Delete dropped spaces' codes in short transactions, so that writers in other
        processes are not held up by one long one; a crash midway resumes at next open."""
        with self._read() as db:
            rows = db.execute("SELECT key FROM spaces WHERE status = 'dropped'").fetchall()
        dropped = [row[0] for row in rows]
        for key in dropped:
            while True:
                with self._write() as db:
                    row = db.execute("SELECT status FROM spaces WHERE key = ?", (key,)).fetchone()
                    if row is None or row[0] != "dropped":
                        break  # opened again meanwhile: its codes are still good
                    deleted = db.execute(
                        "DELETE FROM codes WHERE space = ? AND id IN "
                        "(SELECT id FROM codes WHERE space = ? LIMIT ?)",
                        (key, key, PURGE_CHUNK),
                    ).rowcount
                    if not deleted:
                        db.execute("DELETE FROM spaces WHERE key = ?", (key,))
                        break

    def code_count(self, space: CodeSpace) -> int:
        check_space(space)
        with self._read() as db:
            (count,) = db.execute(
                "SELECT count(*) FROM codes WHERE space = ?", (space_key(space),)
            ).fetchone()
        return int(count)

    def missing_codes(self, space: CodeSpace, limit: int) -> list[tuple[int, bytes]]:
        """Items with no code in ``space``, from where the previous call ended, wrapping
        round once: a scan restarted from the lowest id for every batch would pass over
        every filled item again (quadratic in the gallery's size)."""
        check_space(space)
        limit = _check_count(limit, "limit")
        key = space_key(space)
        query = (
            "SELECT i.id, m.png FROM items i JOIN images m ON m.id = i.id WHERE i.id > ? "
            "AND NOT EXISTS (SELECT 1 FROM codes c WHERE c.space = ? AND c.id = i.id) "
            "ORDER BY i.id LIMIT ?"
        )
        with self._read() as db:
            if self._status(db, space) not in ("open", "active"):
                raise StaleSpaceError(f"space {key} is not open")
            start = self._fill_cursor.get(key, -1)
            found = db.execute(query, (start, key, limit)).fetchall()
            if len(found) < limit and start >= 0:
                found += db.execute(query, (-1, key, limit - len(found))).fetchall()
                found = list({item_id: png for item_id, png in found}.items())
        if found:
            self._fill_cursor[key] = int(found[-1][0])
        return [(int(item_id), bytes(png)) for item_id, png in found]

    def put_codes(self, space: CodeSpace, ids: Sequence[int], codes: np.ndarray) -> None:
        """Store codes of existing items (deleted ones skipped; a code already stored for
        an item in the space stays: an encoder version gives one code per image)."""
        check_space(space)
        item_ids = [_check_id(item_id) for item_id in ids]
        rows = checked_codes(codes, len(item_ids), space)
        key = space_key(space)
        with self._write() as db:
            status = self._status(db, space)
            if status not in ("open", "active"):
                raise StaleSpaceError(f"space {key} is not open")
            for item_id, row in zip(item_ids, rows, strict=True):
                inserted = db.execute(
                    "INSERT OR IGNORE INTO codes (space, id, code) "
                    "SELECT ?, id, ? FROM items WHERE id = ?",
                    (key, row.tobytes(), item_id),
                ).rowcount
                if inserted and status == "active":
                    db.execute(
                        "INSERT INTO changes (item, kind, space) VALUES (?, 'codes', ?)",
                        (item_id, key),
                    )
            self._prune_changes(db)
        self._catch_up()

    # Items --------------------------------------------------------------------------

    def add(self, items: Sequence[NewItem], codes: np.ndarray, space: CodeSpace) -> list[Added]:
        check_space(space)
        items = list(items)
        for item in items:
            check_new_item(item)
        rows = checked_codes(codes, len(items), space)
        if not items:
            return []
        key = space_key(space)
        now = time.time()
        results: list[Added] = []
        with self._write() as db:
            status = self._status(db, space)
            if status not in ("open", "active"):
                raise StaleSpaceError(
                    f"space {key} is neither the active space nor the one being filled"
                )
            new_rows: list[tuple[int, NewItem, bytes]] = []
            in_batch: dict[bytes, GalleryItem] = {}  # the same cell twice in this batch
            taken: set[int] = set()  # ids given in this batch, not inserted yet
            for item, row in zip(items, rows, strict=True):
                stored = in_batch.get(item.digest)
                if stored is not None:
                    results.append(Added(stored, created=False))
                    continue
                existing = db.execute(
                    "SELECT id, label, note, created, source FROM items WHERE digest = ?",
                    (item.digest,),
                ).fetchone()
                if existing is not None:
                    stored = in_batch[item.digest] = _item(existing)
                    self._insert_code(db, key, status, stored.id, row)
                    results.append(Added(stored, created=False))
                    continue
                item_id = id_of(item.digest)
                while (
                    item_id in taken
                    or db.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone()
                ):
                    item_id = (item_id + 1) % _ID_LIMIT  # a different cell holds this id
                taken.add(item_id)
                new_rows.append((item_id, item, row.tobytes()))
                stored = in_batch[item.digest] = GalleryItem(
                    item_id, item.label, item.note, now, item.source
                )
                results.append(Added(stored, created=True))
            self._insert_items(db, key, now, new_rows)
            self._prune_changes(db)
        self._catch_up()
        return results

    def _insert_items(
        self, db: sqlite3.Connection, key: str, now: float, rows: list[tuple[int, NewItem, bytes]]
    ) -> None:
        """New items with their image and code, a statement per table for the batch."""
        db.executemany(
            "INSERT INTO items (id, digest, label, note, created, source) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(i, item.digest, item.label, item.note, now, item.source) for i, item, _ in rows],
        )
        db.executemany(
            "INSERT INTO images (id, png) VALUES (?, ?)", [(i, item.png) for i, item, _ in rows]
        )
        db.executemany(
            "INSERT INTO codes (space, id, code) VALUES (?, ?, ?)",
            [(key, i, code) for i, _, code in rows],
        )
        db.executemany(
            "INSERT INTO label_counts (label, items) VALUES (?, ?) "
            "ON CONFLICT (label) DO UPDATE SET items = items + excluded.items",
            Counter(item.label for _, item, _ in rows).items(),
        )
        db.executemany(
            "INSERT INTO changes (item, kind, space) VALUES (?, 'add', ?)",
            [(i, key) for i, _, _ in rows],
        )

    def _insert_code(
        self, db: sqlite3.Connection, key: str, status: str, item_id: int, row: np.ndarray
    ) -> None:
        """A code for an item already stored, when it has none in this space yet."""
        inserted = db.execute(
            "INSERT OR IGNORE INTO codes (space, id, code) VALUES (?, ?, ?)",
            (key, item_id, row.tobytes()),
        ).rowcount
        if inserted and status == "active":
            db.execute(
                "INSERT INTO changes (item, kind, space) VALUES (?, 'codes', ?)", (item_id, key)
            )

    def get(self, item_id: int) -> GalleryItem | None:
        if not _valid_id(item_id):
            return None
        with self._read() as db:
            row = db.execute(
                "SELECT id, label, note, created, source FROM items WHERE id = ?", (item_id,)
            ).fetchone()
        return _item(row) if row else None

    def image(self, item_id: int) -> bytes | None:
        if not _valid_id(item_id):
            return None
        with self._read() as db:
            row = db.execute("SELECT png FROM images WHERE id = ?", (item_id,)).fetchone()
        return bytes(row[0]) if row else None

    def delete(self, item_id: int) -> bool:
        if not _valid_id(item_id):
            return False
        with self._write() as db:
            deleted = self._delete_items(db, [item_id])
            self._prune_changes(db)
        if deleted:
            self._catch_up()
        return bool(deleted)

    def delete_offline_except(self, keep: set[int]) -> int:
        kept = {_check_id(item_id) for item_id in keep}
        with self._write() as db:
            offline = [
                row[0] for row in db.execute("SELECT id FROM items WHERE source = 'offline'")
            ]
            deleted = self._delete_items(
                db, [item_id for item_id in offline if item_id not in kept]
            )
            self._prune_changes(db)
        if deleted:
            self._catch_up()
        return deleted

    def _delete_items(self, db: sqlite3.Connection, ids: Sequence[int]) -> int:
        deleted = 0
        for chunk in _chunks(ids, _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            labels = db.execute(
                f"SELECT label, count(*) FROM items WHERE id IN ({marks}) GROUP BY label", chunk
            ).fetchall()
            gone = db.execute(f"DELETE FROM items WHERE id IN ({marks}) RETURNING id", chunk)
            gone_ids = [row[0] for row in gone.fetchall()]
            if not gone_ids:
                continue
            db.execute(f"DELETE FROM images WHERE id IN ({marks})", chunk)
            # Through the (space, id) key: a space's codes are found without a scan.
            db.execute(
                f"DELETE FROM codes WHERE space IN (SELECT key FROM spaces) AND id IN ({marks})",
                chunk,
            )
            for label, count in labels:
                db.execute(
                    "UPDATE label_counts SET items = items - ? WHERE label = ?", (count, label)
                )
            db.executemany(
                "INSERT INTO changes (item, kind) VALUES (?, 'delete')",
                [(item_id,) for item_id in gone_ids],
            )
            deleted += len(gone_ids)
        db.execute("DELETE FROM label_counts WHERE items <= 0")
        return deleted

    def items(self, label: str | None, limit: int, after: int | None) -> list[GalleryItem]:
        limit = _check_count(limit, "limit")
        if after is not None and (not isinstance(after, int) or isinstance(after, bool)):
            raise ValueError("after must be an item id")
        start = -1 if after is None else after
        if start >= _ID_LIMIT or limit == 0 or (label is not None and not valid_label(label)):
            return []
        start = max(start, -1)
        with self._read() as db:
            if label is None:
                rows = db.execute(
                    "SELECT id, label, note, created, source FROM items WHERE id > ? "
                    "ORDER BY id LIMIT ?",
                    (start, limit),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT id, label, note, created, source FROM items "
                    "WHERE label = ? AND id > ? ORDER BY id LIMIT ?",
                    (label, start, limit),
                ).fetchall()
        return [_item(row) for row in rows]

    def count(self, label: str | None = None) -> int:
        if label is not None and not valid_label(label):
            return 0
        with self._read() as db:
            if label is None:
                (count,) = db.execute("SELECT coalesce(sum(items), 0) FROM label_counts").fetchone()
            else:
                row = db.execute(
                    "SELECT items FROM label_counts WHERE label = ?", (label,)
                ).fetchone()
                count = row[0] if row else 0
        return int(count)

    def labels(self) -> dict[str, int]:
        with self._read() as db:
            rows = db.execute("SELECT label, items FROM label_counts ORDER BY label").fetchall()
        return {label: int(count) for label, count in rows}

    def search(self, code: np.ndarray, k: int, label: str | None) -> list[Neighbour]:
        k = _check_count(k, "k")
        if self._closed:
            raise RuntimeError("the gallery store is closed")
        index = self._index
        if index is None or k == 0 or (label is not None and not valid_label(label)):
            return []
        return index.search(code, k, label)

    def index_description(self) -> dict[str, object]:
        """This process's in-memory index: its space, how many codes, lists and probes
        (benchmarks, diagnostics)."""
        index = self._index
        if index is None:
            return {"space": None, "codes": 0}
        return {
            "space": space_key(index.space),
            "codes": len(index),
            "lists": index.nlist,
            "nprobe": index.nprobe,
        }

    # Leases -------------------------------------------------------------------------

    def claim(self, job: str, owner: str, ttl_s: float) -> bool:
        """Wall-clock expiry (``time.time``): processes on one host share it, where each
        process's monotonic clock has its own origin."""
        for name, value in (("job", job), ("owner", owner)):
            if not isinstance(value, str) or not 0 < len(value) <= _MAX_KEY_CHARS:
                raise ValueError(f"{name} must be 1 to {_MAX_KEY_CHARS} characters")
        if not isinstance(ttl_s, int | float) or not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError("ttl_s must be a positive number of seconds")
        with self._write() as db:
            now = time.time()
            row = db.execute("SELECT owner, expires FROM leases WHERE job = ?", (job,)).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return False
            db.execute(
                "INSERT INTO leases (job, owner, expires) VALUES (?, ?, ?) ON CONFLICT (job) "
                "DO UPDATE SET owner = excluded.owner, expires = excluded.expires",
                (job, owner, now + ttl_s),
            )
        return True

    # Keeping the index current --------------------------------------------------------

    def refresh(self) -> None:
        self._catch_up()

    def _catch_up(self) -> None:
        """Apply the changes logged since this process's last one: a few rows read when
        there are some, one indexed lookup when there are none. The index is rebuilt from
        the table when the active space changed or the log no longer reaches back."""
        with self._refresh_lock:
            index = self._index
            with self._read() as db:
                active = _state(db, "active")
                pruned = int(_state(db, "pruned_through") or 0)
                changes = db.execute(
                    "SELECT seq, item, kind, space FROM changes WHERE seq > ? ORDER BY seq",
                    (self._seq,),
                ).fetchall()
                current = index is not None and space_key(index.space) == active
                if (index is None and active is not None) or (index is not None and not current):
                    rebuild = True
                else:
                    rebuild = pruned > self._seq or any(row[2] == "activate" for row in changes)
                if rebuild:
                    contents = self._read_space(db, active)
                elif not changes:
                    return
                else:
                    removed: set[int] = set()
                    touched: set[int] = set()
                    for _, item_id, kind, space in changes:
                        if kind == "delete":
                            removed.add(item_id)
                            touched.discard(item_id)
                        elif space == active:
                            touched.add(item_id)
                    fresh = self._rows_for(db, active, touched) if index is not None else []
                    last = int(changes[-1][0])
            if rebuild:
                self._index, self._seq = self._built(contents)
                return
            if index is not None:
                # An id deleted and added again in this stretch is removed, then re-added.
                index.remove(sorted(removed))
                if fresh:
                    ids, labels, codes = zip(*fresh, strict=True)
                    rows = np.frombuffer(b"".join(codes), "<f4").reshape(len(ids), -1)
                    index.add(list(ids), list(labels), rows)
            self._seq = last

    def _rows_for(
        self, db: sqlite3.Connection, key: str, ids: Iterable[int]
    ) -> list[tuple[int, str, bytes]]:
        rows: list[tuple[int, str, bytes]] = []
        for chunk in _chunks(sorted(ids), _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            rows += db.execute(
                "SELECT c.id, i.label, c.code FROM codes c JOIN items i ON i.id = c.id "
                f"WHERE c.space = ? AND c.id IN ({marks})",
                (key, *chunk),
            ).fetchall()
        return rows

    def _read_space(self, db: sqlite3.Connection, key: str | None) -> _SpaceContents:
        """Every code of the active space with its item's id and label, and the last change
        they include (one snapshot)."""
        (last,) = db.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()
        contents = _SpaceContents(last=int(last))
        if key is None:
            return contents
        row = db.execute(
            "SELECT encoder_version, dimension, metric FROM spaces WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            logger.error("%s: active space %s has no spaces row", self.path, key)
            return contents
        contents.space = CodeSpace(int(row[0]), int(row[1]), row[2])
        dimension = contents.space.dimension
        (count,) = db.execute("SELECT count(*) FROM codes WHERE space = ?", (key,)).fetchone()
        # Filled a fetch at a time: the codes are held once, not also as a million bytes.
        codes = np.empty((count, dimension), "<f4")
        filled = 0
        names: dict[str, int] = {}
        skipped = 0
        cursor = db.execute(
            "SELECT c.id, i.label, c.code FROM codes c JOIN items i ON i.id = c.id "
            "WHERE c.space = ? ORDER BY c.id",
            (key,),
        )
        while batch := cursor.fetchmany(_FETCH_CHUNK):
            blobs = []
            for item_id, label, code in batch:
                if len(code) != dimension * 4:
                    skipped += 1
                    continue
                contents.ids.append(item_id)
                number = names.get(label)
                if number is None:
                    number = names[label] = len(names)
                contents.numbers.append(number)
                blobs.append(code)
            rows = np.frombuffer(b"".join(blobs), "<f4").reshape(-1, dimension)
            codes[filled : filled + len(rows)] = rows
            filled += len(rows)
        if skipped:
            logger.error("%s: %d codes of space %s have the wrong size", self.path, skipped, key)
        contents.names = list(names)
        contents.codes = codes[:filled]
        return contents

    def _built(self, contents: _SpaceContents) -> tuple[CodeIndex | None, int]:
        if contents.space is None:
            return None, contents.last
        started = time.perf_counter()
        space = contents.space
        codes = contents.codes if contents.codes is not None else np.empty((0, space.dimension))
        index = CodeIndex.build(
            space,
            np.frombuffer(contents.ids, np.int64),
            np.frombuffer(contents.numbers, np.int32),
            contents.names,
            codes,
            seed=self._seed,
        )
        logger.info(
            "gallery index for space %s: %d codes in %.1f s",
            space_key(space),
            len(index),
            time.perf_counter() - started,
        )
        return index, contents.last

    def _prune_changes(self, db: sqlite3.Connection) -> None:
        """Keep the last ``KEEP_CHANGES`` entries (pruned in steps of as many)."""
        (last,) = db.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()
        pruned = int(_state(db, "pruned_through") or 0)
        if last - pruned <= 2 * KEEP_CHANGES:
            return
        through = last - KEEP_CHANGES
        db.execute("DELETE FROM changes WHERE seq <= ?", (through,))
        db.execute(
            "INSERT INTO state (name, value) VALUES ('pruned_through', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (through,),
        )


def _set_wal_mode(db: sqlite3.Connection) -> None:
    """Switch to WAL (a no-op once the file is in WAL: the mode is kept in the file). While
    another process switches a new file, SQLite answers "database is locked" at once
    instead of waiting out the busy timeout, so the switch is retried until that timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# Checks: every argument is checked before anything is written -----------------------------


def _valid_id(item_id: object) -> bool:
    return isinstance(item_id, int) and not isinstance(item_id, bool) and 0 <= item_id < _ID_LIMIT


def _check_id(item_id: object) -> int:
    if isinstance(item_id, np.integer):
        item_id = int(item_id)
    if not _valid_id(item_id):
        raise ValueError(f"{item_id!r} is not an item id")
    return int(cast(int, item_id))  # _valid_id: a non-negative int below 2**53


def _check_count(value: object, name: str) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0")
    return value


def _item(row: tuple) -> GalleryItem:
    item_id, label, note, created, source = row
    return GalleryItem(int(item_id), label, note, float(created), source)


def _state(db: sqlite3.Connection, name: str) -> Any:
    """A value of the state table (SQLite gives back what was stored: text or integer)."""
    row = db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def _chunks(values: Sequence[int], size: int) -> Iterator[list[int]]:
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]
