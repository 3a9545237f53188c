"""The gallery in Milvus (``GALLERY_URL=milvus://HOST:PORT[/prefix]``), shared by replicas.

Everything lives in the Milvus server, nothing in the process, so any number of API
replicas serve one gallery. Under the collection-name prefix (default ``cellsign``):

* ``<prefix>_items``: one row per item (id, label, note, created, source, digest and the
  size of its PNG). An item exists exactly when this row does: every write puts this row
  last and every delete removes it first, so it is the commit point of the non-transactional
  writes below it.
* ``<prefix>_images``: each PNG as base64 chunks of at most ``CHUNK_BYTES`` bytes, keyed by
  ``id << 6 | chunk``. Milvus 2.3 caps a VARCHAR at 65,535 bytes, and gallery PNGs reach
  ~300 KB (a 256 px RGBA cell), so an image spans up to ``MAX_CHUNKS`` rows.
* ``<prefix>_meta``: small key/value rows: the label registry (``labels()`` counts each
  label it names) and the re-encoding job's lease (``claim``).
* ``<prefix>_space_e<version>_d<dimension>_<metric>``: one collection per code space, its
  codes under an HNSW index with each item's label beside them for filtered searches. The
  alias ``<prefix>_active`` names the active space; ``activate`` switches it in one step.

Milvus 2.3 wants a vector field in every collection: items, images and meta carry a
one-byte binary vector (``_v``) that nothing searches.

Consistency: reads use Milvus' ``Session`` level. pymilvus remembers, per process and per
collection, the timestamp of this process's last write, and a Session read waits until the
server has applied it: the writing process reads its own writes at once, as ``Strong`` would,
without Strong's wait for the next time tick (~200 ms on every read). Other processes and
replicas see a write once the query node has consumed it, within a time tick or two under
the default ``timeTickInterval`` of 200 ms: inside the gallery's one second. Searches name
the space's collection, not the alias, because pymilvus keys its session timestamps by the
name a write used; ``refresh`` re-reads the alias.

A search checks its hits against ``_items``: codes written by an ``add`` that never reached
its commit (the process was killed), or left behind by an interrupted ``delete``, are
never answered.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import unquote, urlsplit

import numpy as np

from .store import (
    MAX_LABEL_CHARS,
    MAX_NOTE_CHARS,
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
    normalised,
    valid_label,
)

try:  # The extra `milvus` installs pymilvus; without it only this module fails to work.
    import grpc
    from pymilvus import DataType, MilvusClient, MilvusException
except ImportError:  # pragma: no cover - exercised only where the extra is missing
    MilvusClient = None
    MilvusException = grpc = DataType = None

logger = logging.getLogger(__name__)

DEFAULT_PORT = 19530
DEFAULT_PREFIX = "cellsign"
PREFIX_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
# 48,000 bytes become 64,000 base64 characters: under the 65,535-byte VARCHAR cap.
CHUNK_BYTES = 48_000
CHUNK_BITS = 6
MAX_CHUNKS = 1 << CHUNK_BITS
MAX_PNG_BYTES = CHUNK_BYTES * MAX_CHUNKS
# Milvus refuses a query whose offset + limit exceeds 16,384 rows (maxQueryResultWindow).
QUERY_WINDOW = 16_384
ID_BATCH = 1_000  # ids in one `id in [...]` expression
IMAGE_BATCH = 256  # image chunks in one answer: 16 MB
WRITE_BATCH_BYTES = 4 * 1024 * 1024  # payload of one insert; the proxy takes 64 MB at most
ORPHAN_MARGIN = 4  # extra hits fetched so that uncommitted codes cannot shorten an answer
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
# The HNSW search list. Measured at 200,000 clustered 64-d codes (two cores): ef 128 gave
# recall@10 0.958 without a filter and 0.85 within a 15% label (HNSW walks past the
# filtered-out cells); ef 512 gave 0.990, 0.982 within 50% and 0.959 within 15%, at about
# 5 ms a search. Milvus searches a label small enough exhaustively.
HNSW_EF_MIN = 512
# How long activate() waits for Milvus to index a filled space's sealed segments before
# switching searches to it anyway (searches stay correct meanwhile, only slower).
INDEX_WAIT_S = 600.0
DUMMY_VECTOR = b"\x00"
FENCE_ID = -1  # the fence row's id (see MilvusGalleryStore._fence)
FENCE_ITEM = {
    "id": FENCE_ID,
    "label": "",
    "note": "",
    "created": 0.0,
    "source": "",
    "digest": "",
    "png_bytes": 0,
    "_v": DUMMY_VECTOR,
}
LOAD_POLL_S = 0.1

P = ParamSpec("P")
R = TypeVar("R")


class MilvusUnavailableError(Exception):
    """Milvus did not answer (down, unreachable, timed out or refusing). A write cut short
    by it is invisible and a retry completes it (see ``MilvusGalleryStore``). The gallery
    service turns any store failure into its 503."""


@dataclass(frozen=True)
class MilvusLocation:
    """Where a gallery lives, parsed from ``milvus://[USER:PASSWORD@]HOST[:PORT][/prefix]``."""

    uri: str  # what pymilvus connects to: http://HOST:PORT
    token: str  # "USER:PASSWORD" for a server with authentication, else ""
    prefix: str

    @property
    def display(self) -> str:
        """The location without credentials, for messages and logs."""
        return f"milvus://{self.uri.removeprefix('http://')}/{self.prefix}"


def parse_milvus_url(url: str) -> MilvusLocation:
    """Check and split a ``GALLERY_URL``; ValueError says what is wrong with it (without
    repeating the URL, which may hold a password)."""
    parts = urlsplit(url)
    if parts.scheme != "milvus":
        raise ValueError("a Milvus gallery URL starts with milvus://")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("the port of the Milvus gallery URL is not a port number") from None
    host = parts.hostname
    if not host:
        raise ValueError("the Milvus gallery URL names no host")
    if parts.query or parts.fragment:
        raise ValueError("a Milvus gallery URL takes no query or fragment")
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(
            f"collection prefix {prefix!r}: a letter, then up to 31 letters, digits or '_'"
        )
    token = ""
    if parts.username is not None:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    address = f"[{host}]" if ":" in host else host
    return MilvusLocation(uri=f"http://{address}:{port}", token=token, prefix=prefix)


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Turn the client's failures (gRPC errors, Milvus errors) into MilvusUnavailableError."""

    @wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        store = cast("MilvusGalleryStore", args[0])
        try:
            return method(*args, **kwargs)
        except (StaleSpaceError, MilvusUnavailableError, ValueError):
            raise
        except Exception as exc:
            if _is_client_failure(exc):
                store._forget_client()
                raise MilvusUnavailableError(
                    f"Milvus gallery at {store.location.display}: {_describe(exc)}"
                ) from exc
            raise

    return wrapper


def _is_client_failure(exc: BaseException) -> bool:
    return (MilvusException is not None and isinstance(exc, MilvusException)) or (
        grpc is not None and isinstance(exc, grpc.RpcError)
    )


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or getattr(exc, "details", lambda: None)()
    return str(message or exc).splitlines()[0][:300]


def _quoted(text: str) -> str:
    """A string literal for a Milvus expression: Milvus unquotes it as Go does, which
    reads JSON's escapes of the quote and the backslash (labels have no control chars)."""
    return json.dumps(text, ensure_ascii=False)


def _id_list(ids: Iterable[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def _batches(seq: Sequence[R], size: int) -> Iterator[Sequence[R]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def _by_bytes(rows: Sequence[dict[str, Any]], size_of: Callable[[dict[str, Any]], int]):
    """Rows in groups of at most ``WRITE_BATCH_BYTES`` (one oversized row goes alone)."""
    group: list[dict[str, Any]] = []
    total = 0
    for row in rows:
        size = size_of(row)
        if group and total + size > WRITE_BATCH_BYTES:
            yield group
            group, total = [], 0
        group.append(row)
        total += size
    if group:
        yield group


SPACE_NAME = re.compile(r"_space_e(\d+)_d(\d+)_(cosine|l2)\Z")


class MilvusGalleryStore:
    """``GalleryStore`` on a Milvus 2.3+ server; see the module docstring for the layout.

    No transactions: a write is a sequence of idempotent upserts ending with the item row,
    so a retry after any failure converges, and a write cut short is invisible (its item row
    is missing) until the same cell is added again, which completes it.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        if MilvusClient is None:
            raise RuntimeError(
                "GALLERY_URL names Milvus but pymilvus is not installed: "
                "pip install 'cellsign[milvus]'"
            )
        self.location = parse_milvus_url(url)
        self.timeout_s = timeout_s
        prefix = self.location.prefix
        self.items_name = f"{prefix}_items"
        self.images_name = f"{prefix}_images"
        self.meta_name = f"{prefix}_meta"
        self.alias = f"{prefix}_active"
        self._space_prefix = f"{prefix}_space_"
        self._client_lock = threading.Lock()
        self._client_: Any = None
        self._ready = False
        self._write_lock = threading.Lock()  # one add/delete at a time in this process
        self._active: CodeSpace | None = None
        self._active_known = False
        self._scan_cursors: dict[str, int] = {}

    # -- connection -------------------------------------------------------------------
    def _client(self) -> Any:
        """The connected client, created (and the base collections made ready) on first use
        and again after a failure, so a store outlives a Milvus restart."""
        with self._client_lock:
            client = self._connection()
            if not self._ready:
                self._ensure_base(client)
                self._ready = True
            return client

    def _connection(self) -> Any:
        if self._client_ is None:
            self._client_ = MilvusClient(
                uri=self.location.uri, token=self.location.token, timeout=self.timeout_s
            )
            self._ready = False
        return self._client_

    def _forget_client(self) -> None:
        with self._client_lock:
            client, self._client_, self._ready = self._client_, None, False
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken channel may fail too
                client.close()

    def _ensure_base(self, client: Any) -> None:
        """Create the items, images and meta collections when missing and load all three
        (loads run together: each takes about a second on an idle server)."""
        wanted = {
            self.items_name: self._items_schema(),
            self.images_name: self._images_schema(),
            self.meta_name: self._meta_schema(),
        }
        existing = set(client.list_collections(timeout=self.timeout_s))
        for name, schema in wanted.items():
            if name not in existing:
                self._create(client, name, schema, "_v", "BIN_FLAT", "HAMMING", {})
        self._load(client, list(wanted))

    def _create(
        self,
        client: Any,
        name: str,
        schema: Any,
        field: str,
        index_type: str,
        metric: str,
        params: dict[str, Any],
    ) -> None:
        try:
            client.create_collection(
                name, schema=schema, consistency_level="Session", timeout=self.timeout_s
            )
        except MilvusException:
            # Another replica may have created it a moment ago.
            if not client.has_collection(name, timeout=self.timeout_s):
                raise
        index = client.prepare_index_params()
        index.add_index(field_name=field, index_type=index_type, metric_type=metric, params=params)
        try:
            client.create_index(name, index, timeout=self.timeout_s, sync=False)
        except MilvusException:
            if not client.list_indexes(name, timeout=self.timeout_s):
                raise

    def _load(self, client: Any, names: Sequence[str]) -> None:
        for name in names:
            client.load_collection(name, timeout=self.timeout_s, _async=True)
        deadline = time.monotonic() + max(self.timeout_s, 60.0)
        pending = list(names)
        while pending:
            pending = [
                name
                for name in pending
                if str(client.get_load_state(name, timeout=self.timeout_s)["state"]) != "Loaded"
            ]
            if pending and time.monotonic() > deadline:
                raise MilvusUnavailableError(
                    f"Milvus gallery at {self.location.display}: {pending} did not load"
                )
            if pending:
                time.sleep(LOAD_POLL_S)

    @staticmethod
    def _items_schema() -> Any:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("label", DataType.VARCHAR, max_length=MAX_LABEL_CHARS * 4)
        schema.add_field("note", DataType.VARCHAR, max_length=MAX_NOTE_CHARS * 4)
        schema.add_field("created", DataType.DOUBLE)
        schema.add_field("source", DataType.VARCHAR, max_length=16)
        schema.add_field("digest", DataType.VARCHAR, max_length=64)
        schema.add_field("png_bytes", DataType.INT64)
        schema.add_field("_v", DataType.BINARY_VECTOR, dim=8)
        return schema

    @staticmethod
    def _images_schema() -> Any:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("data", DataType.VARCHAR, max_length=65_535)
        schema.add_field("_v", DataType.BINARY_VECTOR, dim=8)
        return schema

    @staticmethod
    def _meta_schema() -> Any:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("value", DataType.VARCHAR, max_length=4096)
        schema.add_field("_v", DataType.BINARY_VECTOR, dim=8)
        return schema

    @staticmethod
    def _space_schema(space: CodeSpace) -> Any:
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=json.dumps(space.__dict__)
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("label", DataType.VARCHAR, max_length=MAX_LABEL_CHARS * 4)
        schema.add_field("code", DataType.FLOAT_VECTOR, dim=space.dimension)
        return schema

    # -- names and small helpers --------------------------------------------------------
    def space_name(self, space: CodeSpace) -> str:
        return f"{self._space_prefix}e{space.encoder_version}_d{space.dimension}_{space.metric}"

    def _space_of(self, name: str) -> CodeSpace | None:
        if not name.startswith(self._space_prefix):
            return None
        match = SPACE_NAME.search(name)
        if match is None:
            return None
        version, dimension, metric = match.groups()
        return CodeSpace(int(version), int(dimension), cast(Any, metric))

    def _space_names(self, client: Any) -> list[str]:
        return [
            name
            for name in client.list_collections(timeout=self.timeout_s)
            if self._space_of(name) is not None
        ]

    def _query(self, client: Any, name: str, expr: str, fields: list[str], **kwargs: Any):
        kwargs.setdefault("consistency_level", "Session")
        return client.query(
            name, filter=expr, output_fields=fields, timeout=self.timeout_s, **kwargs
        )

    def _count(self, client: Any, name: str, expr: str) -> int:
        rows = self._query(client, name, expr, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _upsert(self, client: Any, name: str, rows: Sequence[dict[str, Any]], size_of) -> None:
        for group in _by_bytes(rows, size_of):
            client.upsert(name, group, timeout=self.timeout_s)

    def _item_rows(self, client: Any, ids: Sequence[int], **kwargs: Any) -> dict[int, dict]:
        """Item rows by id (``kwargs`` may ask for another consistency level)."""
        rows: dict[int, dict] = {}
        wanted = [item_id for item_id in dict.fromkeys(ids) if item_id >= 0]  # not the fence
        for batch in _batches(wanted, ID_BATCH):
            for row in self._query(
                client,
                self.items_name,
                f"id in {_id_list(batch)}",
                ["id", "label", "note", "created", "source", "digest", "png_bytes"],
                **kwargs,
            ):
                rows[int(row["id"])] = row
        return rows

    @staticmethod
    def _item(row: dict[str, Any]) -> GalleryItem:
        return GalleryItem(
            id=int(row["id"]),
            label=str(row["label"]),
            note=str(row["note"]),
            created=float(row["created"]),
            source=cast(Any, row["source"]),
        )

    @staticmethod
    def _chunks(png_bytes: int) -> int:
        return max(1, -(-png_bytes // CHUNK_BYTES))

    def _pngs(self, client: Any, rows: Sequence[dict[str, Any]]) -> dict[int, bytes]:
        """PNGs of item rows; an item whose chunks are not all there is left out."""
        wanted = {int(row["id"]): int(row["png_bytes"]) for row in rows}
        keys = [
            item_id << CHUNK_BITS | seq
            for item_id, size in wanted.items()
            for seq in range(self._chunks(size))
        ]
        chunks: dict[int, str] = {}
        for batch in _batches(keys, IMAGE_BATCH):
            for row in self._query(
                client, self.images_name, f"key in {_id_list(batch)}", ["key", "data"]
            ):
                chunks[int(row["key"])] = str(row["data"])
        pngs: dict[int, bytes] = {}
        for item_id, size in wanted.items():
            parts = [chunks.get(item_id << CHUNK_BITS | s) for s in range(self._chunks(size))]
            if any(part is None for part in parts):
                continue
            try:
                png = b"".join(base64.b64decode(part) for part in cast(list[str], parts))
            except (binascii.Error, ValueError):
                continue
            if len(png) == size:
                pngs[item_id] = png
        return pngs

    def _active_name(self, client: Any) -> str | None:
        """The collection the alias names now, read from the server (listed first: asking
        for a missing alias would make pymilvus log an error on every refresh)."""
        aliases = client.list_aliases(timeout=self.timeout_s).get("aliases", [])
        if self.alias not in aliases:
            return None
        answer = client.describe_alias(self.alias, timeout=self.timeout_s)
        return answer.get("collection_name") or None

    def _read_active(self, client: Any) -> CodeSpace | None:
        name = self._active_name(client)
        space = self._space_of(name) if name else None
        self._active, self._active_known = space, True
        return space

    def _retired(self, client: Any, name: str) -> bool:
        rows = self._query(
            client,
            self.meta_name,
            f"key == {_quoted('retired:' + name)}",
            ["key"],
            consistency_level="Strong",
        )
        return bool(rows)

    def _accepts(self, client: Any, space: CodeSpace) -> bool:
        """``space`` is the active space, or open and not being replaced by an activation."""
        active = self._read_active(client)
        if active == space:
            return True
        name = self.space_name(space)
        if not client.has_collection(name, timeout=self.timeout_s):
            return False
        return not self._retired(client, name)

    # -- the protocol ---------------------------------------------------------------------
    @_translated
    def active_space(self) -> CodeSpace | None:
        if not self._active_known:
            self._read_active(self._client())
        return self._active

    @_translated
    def refresh(self) -> None:
        self._read_active(self._client())

    @_translated
    def add(self, items: Sequence[NewItem], codes: np.ndarray, space: CodeSpace) -> list[Added]:
        check_space(space)
        items = list(items)
        rows = checked_codes(codes, len(items), space)
        for item in items:
            check_new_item(item)
            if len(item.png) > MAX_PNG_BYTES:
                raise ValueError(f"a gallery PNG holds at most {MAX_PNG_BYTES} bytes")
        if not items:
            return []
        client = self._client()
        with self._write_lock:
            if not self._accepts(client, space):
                raise StaleSpaceError(f"space {space} is neither active nor being filled")
            ids, existing = self._assign_ids(client, items)
            now = time.time()
            fresh: dict[int, int] = {}  # id -> index of the item that stores it
            for index, item_id in enumerate(ids):
                if item_id not in existing and item_id not in fresh:
                    fresh[item_id] = index
            self._write_new(client, items, rows, space, fresh, now)
            results: list[Added] = []
            seen: set[int] = set()
            for item_id in ids:
                if item_id in existing:
                    results.append(Added(self._item(existing[item_id]), created=False))
                else:
                    item = items[fresh[item_id]]
                    stored = GalleryItem(item_id, item.label, item.note, now, item.source)
                    results.append(Added(stored, created=item_id not in seen))
                seen.add(item_id)
            return results

    def _assign_ids(
        self, client: Any, items: Sequence[NewItem]
    ) -> tuple[list[int], dict[int, dict]]:
        """Each item's id: ``id_of(digest)``, or the next free one above it when a different
        cell holds it. Returns the ids and the stored rows of the cells already there."""
        digests = [item.digest.hex() for item in items]
        ids = [id_of(item.digest) for item in items]
        existing: dict[int, dict] = {}
        taken: dict[int, str] = {}  # id -> digest, stored or claimed in this batch
        pending = list(range(len(items)))
        while pending:
            rows = self._item_rows(client, [ids[i] for i in pending if ids[i] not in taken])
            taken.update({item_id: str(row["digest"]) for item_id, row in rows.items()})
            existing.update(rows)
            still: list[int] = []
            for index in pending:
                owner = taken.get(ids[index])
                if owner is None:
                    taken[ids[index]] = digests[index]
                elif owner != digests[index]:
                    ids[index] += 1  # a 53-bit collision: probe upwards
                    still.append(index)
            pending = still
        stored = {item_id: row for item_id, row in existing.items() if item_id in set(ids)}
        return ids, stored

    def _write_new(
        self,
        client: Any,
        items: Sequence[NewItem],
        codes: np.ndarray,
        space: CodeSpace,
        fresh: dict[int, int],
        now: float,
    ) -> None:
        """Images, then codes, then the label registry, then the item rows (the commit)."""
        if not fresh:
            return
        image_rows = [
            {
                "key": item_id << CHUNK_BITS | seq,
                "data": base64.b64encode(png[start : start + CHUNK_BYTES]).decode("ascii"),
                "_v": DUMMY_VECTOR,
            }
            for item_id, index in fresh.items()
            for png in [items[index].png]
            for seq, start in enumerate(range(0, max(len(png), 1), CHUNK_BYTES))
        ]
        self._upsert(client, self.images_name, image_rows, lambda row: len(row["data"]) + 16)
        code_rows = [
            {"id": item_id, "label": items[index].label, "code": codes[index].tolist()}
            for item_id, index in fresh.items()
        ]
        self._upsert(client, self.space_name(space), code_rows, lambda _: space.dimension * 4 + 80)
        if not self._accepts(client, space):
            # An activation replaced `space` while these codes were written: the items
            # would have no codes in the space searches now use.
            raise StaleSpaceError(f"space {space} was replaced while adding")
        labels = sorted({items[index].label for index in fresh.values()})
        self._upsert(
            client,
            self.meta_name,
            [{"key": f"label:{label}", "value": "", "_v": DUMMY_VECTOR} for label in labels],
            lambda row: len(row["key"]) + 16,
        )
        item_rows = [
            {
                "id": item_id,
                "label": items[index].label,
                "note": items[index].note,
                "created": now,
                "source": items[index].source,
                "digest": items[index].digest.hex(),
                "png_bytes": len(items[index].png),
                "_v": DUMMY_VECTOR,
            }
            for item_id, index in fresh.items()
        ]
        self._upsert(client, self.items_name, item_rows, lambda row: 1_600)

    @_translated
    def get(self, item_id: int) -> GalleryItem | None:
        row = self._item_rows(self._client(), [item_id]).get(item_id)
        return None if row is None else self._item(row)

    @_translated
    def image(self, item_id: int) -> bytes | None:
        client = self._client()
        row = self._item_rows(client, [item_id]).get(item_id)
        if row is None:
            return None
        png = self._pngs(client, [row]).get(item_id)
        if png is None:
            raise MilvusUnavailableError(
                f"Milvus gallery at {self.location.display}: image of item {item_id} is incomplete"
            )
        return png

    @_translated
    def delete(self, item_id: int) -> bool:
        client = self._client()
        with self._write_lock:
            if item_id not in self._item_rows(client, [item_id]):
                return False
            self._remove(client, [item_id])
            return True

    def _remove(self, client: Any, ids: Sequence[int]) -> None:
        """Item rows first (from then on the items are gone), then codes and images."""
        if not ids:
            return
        for batch in _batches(list(ids), ID_BATCH):
            client.delete(self.items_name, filter=f"id in {_id_list(batch)}")
        self._fence(client, self.items_name, FENCE_ITEM)
        for name in self._space_names(client):
            for batch in _batches(list(ids), ID_BATCH):
                client.delete(name, filter=f"id in {_id_list(batch)}")
            space = cast(CodeSpace, self._space_of(name))
            code = [1.0] + [0.0] * (space.dimension - 1)
            self._fence(client, name, {"id": FENCE_ID, "label": "", "code": code})
        for item_id in ids:
            low = item_id << CHUNK_BITS
            client.delete(self.images_name, filter=f"key >= {low} and key < {low + MAX_CHUNKS}")

    def _fence(self, client: Any, name: str, row: dict[str, Any]) -> None:
        """Upsert the collection's fence row (id -1, never an item) after a delete.

        A Session read waits for the last write this process made to the collection, as
        pymilvus remembers it from the write's answer; Milvus 2.3 answers a delete without
        its timestamp, so a read right after it could miss it. The fence's upsert carries
        one later than the delete's, and nothing reads the fence: listings and counts ask
        for ids of at least 0, and searches drop hits below 0."""
        client.upsert(name, [row], timeout=self.timeout_s)

    @_translated
    def delete_offline_except(self, keep: set[int]) -> int:
        client = self._client()
        with self._write_lock:
            gone = [
                int(row["id"])
                for row in self._scan(client, 'source == "offline"', ["id"])
                if int(row["id"]) not in keep
            ]
            self._remove(client, gone)
            return len(gone)

    def _scan(
        self, client: Any, expr: str, fields: list[str], after: int = -1
    ) -> Iterator[dict[str, Any]]:
        """Every item row matching ``expr``, in ascending id order, a window at a time."""
        while True:
            page, exhausted = self._page(client, expr, fields, after, QUERY_WINDOW)
            yield from page
            if exhausted or not page:
                return
            after = int(page[-1]["id"])

    def _page(
        self, client: Any, expr: str, fields: list[str], after: int, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` item rows with ids above ``after`` in id order, and whether they
        are the last ones. Milvus answers a query with a limit with the lowest primary keys
        (merged across segments). Two replicas upserting the same new cell at once can
        leave two rows with one id, which a query may answer twice: they count towards the
        limit but are answered once."""
        clause = f"id > {after}" + (f" and ({expr})" if expr else "")
        rows = self._query(client, self.items_name, clause, ["id", *fields], limit=limit)
        unique = {int(row["id"]): row for row in rows}
        return [unique[key] for key in sorted(unique)], len(rows) < limit

    @_translated
    def items(self, label: str | None, limit: int, after: int | None) -> list[GalleryItem]:
        if limit <= 0 or (label is not None and not valid_label(label)):
            return []
        client = self._client()
        expr = "" if label is None else f"label == {_quoted(label)}"
        fields = ["label", "note", "created", "source"]
        start = -1 if after is None else after
        found: list[GalleryItem] = []
        while len(found) < limit:
            want = min(QUERY_WINDOW, limit - len(found))
            page, exhausted = self._page(client, expr, fields, start, want)
            found.extend(self._item(row) for row in page)
            if exhausted or not page:
                break
            start = found[-1].id
        return found[:limit]

    @_translated
    def count(self, label: str | None = None) -> int:
        if label is not None and not valid_label(label):
            return 0
        expr = "id >= 0" if label is None else f"label == {_quoted(label)}"
        return self._count(self._client(), self.items_name, expr)

    @_translated
    def labels(self) -> dict[str, int]:
        client = self._client()
        rows = self._query(
            client, self.meta_name, 'key like "label:%"', ["key"], limit=QUERY_WINDOW
        )
        counts: dict[str, int] = {}
        for label in sorted(str(row["key"]).removeprefix("label:") for row in rows):
            number = self._count(client, self.items_name, f"label == {_quoted(label)}")
            if number:
                counts[label] = number
        return counts

    @_translated
    def search(self, code: np.ndarray, k: int, label: str | None) -> list[Neighbour]:
        """Searches the active space as of the last ``refresh``. When another replica's
        activation dropped it meanwhile, the answer is empty and ``active_space()`` names
        the new space: ``code`` came from the old space's encoder, so the caller encodes
        the query again (the gallery service compares the space before and after)."""
        if k <= 0 or (label is not None and not valid_label(label)):
            return []
        client = self._client()
        space = self.active_space()
        if space is None:
            return []
        try:
            return self._search(client, space, code, k, label)
        except MilvusException:
            if client.has_collection(self.space_name(space), timeout=self.timeout_s):
                raise
            self._read_active(client)
            return []

    def _search(
        self, client: Any, space: CodeSpace, code: np.ndarray, k: int, label: str | None
    ) -> list[Neighbour]:
        query = normalised(np.asarray(code).reshape(1, -1), space.metric)
        if query.shape[1] != space.dimension:
            raise ValueError(f"a code of dimension {query.shape[1]}, space has {space.dimension}")
        metric = "COSINE" if space.metric == "cosine" else "L2"
        expr = "" if label is None else f"label == {_quoted(label)}"
        fetch = k + ORPHAN_MARGIN
        while True:
            hits = client.search(
                self.space_name(space),
                [query[0].tolist()],
                filter=expr,
                limit=fetch,
                output_fields=["label"],
                search_params={"metric_type": metric, "params": {"ef": max(fetch, HNSW_EF_MIN)}},
                timeout=self.timeout_s,
                consistency_level="Session",
            )[0]
            committed = self._item_rows(client, [int(hit["id"]) for hit in hits if hit["id"] >= 0])
            found = [
                Neighbour(int(hit["id"]), str(hit["entity"]["label"]), self._distance(hit, metric))
                for hit in hits
                if int(hit["id"]) in committed
            ]
            if len(found) >= k or len(hits) < fetch or fetch >= QUERY_WINDOW:
                return found[:k]
            fetch = min(fetch * 4, QUERY_WINDOW)

    @staticmethod
    def _distance(hit: dict[str, Any], metric: str) -> float:
        score = float(hit["distance"])
        if metric == "COSINE":  # Milvus answers the similarity
            return max(0.0, 1.0 - score)
        return float(np.sqrt(max(score, 0.0)))  # Milvus answers the squared distance

    @_translated
    def open_space(self, space: CodeSpace) -> None:
        client = self._client()
        name = self.space_name(space)
        if not client.has_collection(name, timeout=self.timeout_s):
            metric = "COSINE" if space.metric == "cosine" else "L2"
            params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
            self._create(client, name, self._space_schema(space), "code", "HNSW", metric, params)
        self._load(client, [name])
        client.delete(self.meta_name, filter=f"key == {_quoted('retired:' + name)}")
        self._scan_cursors.pop(name, None)

    @_translated
    def missing_codes(self, space: CodeSpace, limit: int) -> list[tuple[int, bytes]]:
        """Items without a code in ``space``. Successive calls walk the ids upwards from
        where the last one stopped, then from the start up to there (items added meanwhile
        below the cursor): an empty answer means a whole pass found nothing missing."""
        client = self._client()
        name = self.space_name(space)
        if limit <= 0:
            return []
        if not client.has_collection(name, timeout=self.timeout_s):
            raise StaleSpaceError(f"space {space} is not open")
        start = self._scan_cursors.get(name, -1)
        missing: list[dict[str, Any]] = []
        # Ids above the cursor, then (when it was not at the start) ids up to it.
        for low, high in [(start, None), (-1, start)] if start >= 0 else [(-1, None)]:
            cursor = low
            while len(missing) < limit:
                page, exhausted = self._page(client, "", ["png_bytes"], cursor, ID_BATCH)
                if high is not None:
                    exhausted = exhausted or any(int(row["id"]) >= high for row in page)
                    page = [row for row in page if int(row["id"]) <= high]
                if page:
                    missing += self._without_code(client, name, page)[: limit - len(missing)]
                    cursor = int(page[-1]["id"])
                if exhausted or not page:
                    break
            if len(missing) == limit:
                break
        self._scan_cursors[name] = int(missing[-1]["id"]) if len(missing) == limit else -1
        pngs = self._pngs(client, missing)
        return [(int(row["id"]), pngs[int(row["id"])]) for row in missing if int(row["id"]) in pngs]

    def _without_code(
        self, client: Any, name: str, rows: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        ids = [int(row["id"]) for row in rows]
        have = {
            int(row["id"]) for row in self._query(client, name, f"id in {_id_list(ids)}", ["id"])
        }
        return [row for row in rows if int(row["id"]) not in have]

    @_translated
    def put_codes(self, space: CodeSpace, ids: Sequence[int], codes: np.ndarray) -> None:
        check_space(space)
        rows = checked_codes(codes, len(ids), space)
        if not len(ids):
            return
        client = self._client()
        name = self.space_name(space)
        if not client.has_collection(name, timeout=self.timeout_s):
            raise StaleSpaceError(f"space {space} is not open")
        stored = self._item_rows(client, [int(i) for i in ids])
        # One row per id (the last code given wins): Milvus keeps both rows of an id
        # repeated within one upsert.
        latest = {int(item_id): row for item_id, row in zip(ids, rows, strict=True)}
        code_rows = [
            {"id": item_id, "label": str(stored[item_id]["label"]), "code": row.tolist()}
            for item_id, row in latest.items()
            if item_id in stored
        ]
        self._upsert(client, name, code_rows, lambda _: space.dimension * 4 + 80)

    @_translated
    def code_count(self, space: CodeSpace) -> int:
        client = self._client()
        name = self.space_name(space)
        if not client.has_collection(name, timeout=self.timeout_s):
            return 0
        return self._count(client, name, "id >= 0")

    @_translated
    def activate(self, space: CodeSpace) -> None:
        """Retire the other spaces (adds to them fail from now on), point the alias at
        ``space``, then drop them."""
        client = self._client()
        name = self.space_name(space)
        if not client.has_collection(name, timeout=self.timeout_s):
            raise StaleSpaceError(f"space {space} is not open")
        if self._active_name(client) != name:
            self._seal(client, name)
        others = [other for other in self._space_names(client) if other != name]
        if others:
            self._upsert(
                client,
                self.meta_name,
                [{"key": f"retired:{o}", "value": "", "_v": DUMMY_VECTOR} for o in others],
                lambda row: len(row["key"]) + 16,
            )
        current = self._active_name(client)
        if current is None:
            client.create_alias(name, self.alias, timeout=self.timeout_s)
        elif current != name:
            client.alter_alias(name, self.alias, timeout=self.timeout_s)
        self._active, self._active_known = space, True
        for other in others:
            client.drop_collection(other, timeout=self.timeout_s)
            client.delete(self.meta_name, filter=f"key == {_quoted('retired:' + other)}")
            self._scan_cursors.pop(other, None)

    def _seal(self, client: Any, name: str) -> None:
        """Flush a filled space (and the items, which every search reads by id) and wait
        (up to ``INDEX_WAIT_S``) until the space's HNSW index covers every row. Milvus
        searches a growing segment by brute force, and seals one only once it is large or
        old: measured on two cores, 175 ms a search at 200,000 growing codes, 6 ms at
        50,000 sealed and indexed (benchmarks/gallery_milvus_results.md)."""
        began = time.monotonic()
        for collection in (name, self.items_name):
            client.flush(collection, timeout=INDEX_WAIT_S)
        while time.monotonic() - began < INDEX_WAIT_S:
            state = client.describe_index(name, "code", timeout=self.timeout_s)
            if not state.get("pending_index_rows"):
                return
            time.sleep(0.5)
        logger.warning("gallery: %s is not fully indexed after %.0f s", name, INDEX_WAIT_S)

    @_translated
    def claim(self, job: str, owner: str, ttl_s: float) -> bool:
        """Best effort: read the lease, write ours when it is free, expired or ours, and
        read it back. Milvus has no compare-and-set, so two owners racing within one read
        may both believe they hold it; two re-encoders then write the same codes (the same
        encoder version encodes the same PNGs to the same codes, and ``put_codes`` upserts
        by id), so the duplicate costs work, never correctness."""
        client = self._client()
        key = f"claim:{job}"[:512]
        now = time.time()
        holder = self._lease(client, key)
        if holder is not None and holder[0] != owner and holder[1] > now:
            return False
        value = json.dumps({"owner": owner, "until": now + ttl_s})[:4096]
        self._upsert(
            client, self.meta_name, [{"key": key, "value": value, "_v": DUMMY_VECTOR}], len
        )
        holder = self._lease(client, key)
        return holder is not None and holder[0] == owner

    def _lease(self, client: Any, key: str) -> tuple[str, float] | None:
        rows = self._query(
            client, self.meta_name, f"key == {_quoted(key)}", ["value"], consistency_level="Strong"
        )
        if not rows:
            return None
        try:
            lease = json.loads(rows[0]["value"])
            return str(lease["owner"]), float(lease["until"])
        except (ValueError, KeyError, TypeError):
            return None

    def close(self) -> None:
        self._forget_client()

    # -- export (app/gallery/__main__.py) -------------------------------------------------
    @_translated
    def digests(self, ids: Sequence[int]) -> dict[int, bytes]:
        """The content digests of the items among ``ids`` (an export carries them: an id
        alone cannot give back the digest it came from)."""
        rows = self._item_rows(self._client(), [int(i) for i in ids])
        return {item_id: bytes.fromhex(str(row["digest"])) for item_id, row in rows.items()}

    @_translated
    def codes(self, space: CodeSpace, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored codes in ``space`` of the items among ``ids`` that have one."""
        client = self._client()
        name = self.space_name(space)
        if not client.has_collection(name, timeout=self.timeout_s):
            raise StaleSpaceError(f"space {space} is not open")
        found: dict[int, np.ndarray] = {}
        wanted = [int(i) for i in dict.fromkeys(ids) if int(i) >= 0]
        for batch in _batches(wanted, ID_BATCH):
            for row in self._query(client, name, f"id in {_id_list(batch)}", ["id", "code"]):
                found[int(row["id"])] = np.asarray(row["code"], np.float32)
        return found

    # -- for tests and tools ------------------------------------------------------------
    @_translated
    def drop_everything(self) -> None:
        """Drop every collection and the alias under this prefix (tests, ``import --replace``)."""
        with self._client_lock:
            client = self._connection()
        if self._active_name(client) is not None:
            client.drop_alias(self.alias, timeout=self.timeout_s)
        for name in [*self._space_names(client), self.items_name, self.images_name, self.meta_name]:
            if client.has_collection(name, timeout=self.timeout_s):
                client.drop_collection(name, timeout=self.timeout_s)
        self._active, self._active_known = None, False
        with self._client_lock:
            self._ready = False
