"""What a gallery store promises, whichever engine holds it.

The living gallery (docs/gallery.md) keeps cells that users add, label and delete while the
service runs. Two stores implement this protocol: the embedded one (SQLite in WAL mode under
``GALLERY_DIR``, searched through a FAISS index kept current in each worker) and Milvus
(``GALLERY_URL=milvus://HOST:PORT``). The HTTP routes and the gallery service speak only
this protocol, and one behaviour test suite runs against both stores.

Items keep their images; their codes belong to a *code space*: one autoencoder version, its
code dimension and its metric. Searches run in the active space. When a new autoencoder
version serves, the gallery service fills a new space in the background and then makes it
active in one step, so a search never mixes codes of two encoders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

Metric = Literal["cosine", "l2"]
Source = Literal["offline", "added"]

MAX_LABEL_CHARS = 64
# The label of an offline cell that had none (cells outside labelled sub-folders): every
# item has a label, so that a filter can always name it.
UNLABELLED = "unlabelled"
MAX_NOTE_CHARS = 256
# Ids are the first 53 bits of the content digest: the same cell gets the same id in every
# store, replica and export, and an id survives a JavaScript number (2**53) on the page.
ID_BITS = 53
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # every stored image is a PNG


def valid_label(label: object) -> bool:
    """A label: 1 to ``MAX_LABEL_CHARS`` printable characters (no control characters)."""
    return isinstance(label, str) and 0 < len(label) <= MAX_LABEL_CHARS and label.isprintable()


def valid_note(note: object) -> bool:
    """A note: at most ``MAX_NOTE_CHARS`` printable characters, on one line."""
    return (
        isinstance(note, str) and len(note) <= MAX_NOTE_CHARS and (not note or note.isprintable())
    )


def check_new_item(item: object) -> None:
    """Refuse (``ValueError``) an item no store may hold, whatever its caller checked: the
    service checks labels for users; the stores check again for imports and scripts."""
    if not isinstance(item, NewItem):
        raise ValueError("items must be NewItem")
    if not (isinstance(item.png, bytes) and item.png.startswith(PNG_SIGNATURE)):
        raise ValueError("png must be the bytes of a PNG")
    if not (isinstance(item.digest, bytes) and len(item.digest) == 32):
        raise ValueError("digest must be 32 bytes (SHA-256)")
    if not valid_label(item.label):
        raise ValueError(
            f"label must be 1 to {MAX_LABEL_CHARS} printable characters, got {item.label!r:.80}"
        )
    if not valid_note(item.note):
        raise ValueError(f"note must be at most {MAX_NOTE_CHARS} printable characters")
    if item.source not in ("offline", "added"):
        raise ValueError("source must be 'offline' or 'added'")


def content_digest(mode: str, size: tuple[int, int], pixels: bytes) -> bytes:
    """SHA-256 of a decoded image (its mode, size and pixels), not of the uploaded bytes, so
    the same cell re-encoded as another file is still the same item."""
    digest = hashlib.sha256(f"{mode}:{size[0]}x{size[1]}:".encode())
    digest.update(pixels)
    return digest.digest()


def id_of(digest: bytes) -> int:
    """The id a digest asks for (a store probes upwards on the rare collision)."""
    return int.from_bytes(digest[:8], "big") >> (64 - ID_BITS)


@dataclass(frozen=True)
class CodeSpace:
    """The codes of one encoder version. ``cosine`` spaces hold L2-normalised codes."""

    encoder_version: int
    dimension: int
    metric: Metric = "cosine"


@dataclass(frozen=True)
class GalleryItem:
    id: int
    label: str
    note: str
    created: float  # Unix seconds, set by the store
    source: Source


@dataclass(frozen=True)
class NewItem:
    """A cell to add: its PNG (already normalised by the caller), the digest of its pixels
    (``content_digest``), and what the user said about it."""

    png: bytes
    digest: bytes
    label: str
    note: str = ""
    source: Source = "added"


@dataclass(frozen=True)
class Neighbour:
    id: int
    label: str
    distance: float  # smaller is closer: cosine distance or Euclidean distance


@dataclass(frozen=True)
class Added:
    item: GalleryItem
    created: bool  # False: the same cell was already there, and ``item`` is that one


class StaleSpaceError(Exception):
    """A write named a space that is neither active nor open (never opened, or dropped by
    a switch): ``add`` must encode the cells again with the active space's encoder and
    retry; ``put_codes``, ``missing_codes`` and ``activate`` mean the re-encoding lost a
    race with another one."""


class GalleryStore(Protocol):
    """One gallery. Every method may block (disk, network): call it from a worker thread.

    Writes are atomic and durable when they return: an ``add`` either stored every item
    with its codes, or nothing. Reads by the process that wrote see the write at once;
    other processes and replicas see it after ``refresh`` (which the gallery service calls
    every ``app.gallery.service.REFRESH_INTERVAL_S``), so within one second.
    """

    def active_space(self) -> CodeSpace | None:
        """The space searches use; None until the first space is activated."""
        ...

    def add(self, items: Sequence[NewItem], codes: np.ndarray, space: CodeSpace) -> list[Added]:
        """Store ``items`` (``codes[i]`` is item i's code in ``space``) in one transaction.

        A digest already stored returns the stored item (its label and note unchanged).
        ``space`` must be the active space, or the one being filled; otherwise raises
        ``StaleSpaceError`` and stores nothing.
        """
        ...

    def get(self, item_id: int) -> GalleryItem | None: ...

    def image(self, item_id: int) -> bytes | None:
        """The item's PNG, or None when there is no such item."""
        ...

    def delete(self, item_id: int) -> bool:
        """Remove the item, its image and its codes in every space; False when absent."""
        ...

    def delete_offline_except(self, keep: set[int]) -> int:
        """Remove the ``offline`` items whose ids are not in ``keep`` (a new offline index
        replaced them); added items stay. Returns how many went."""
        ...

    def items(self, label: str | None, limit: int, after: int | None) -> list[GalleryItem]:
        """Up to ``limit`` items in ascending id order, ids above ``after``, of ``label`` only
        when given: a cursor-paged listing."""
        ...

    def count(self, label: str | None = None) -> int: ...

    def labels(self) -> dict[str, int]:
        """Every label and how many items carry it."""
        ...

    def search(self, code: np.ndarray, k: int, label: str | None) -> list[Neighbour]:
        """The ``k`` items nearest to ``code`` in the active space, among ``label``'s items
        only when given (a filtered search, never "top k, then filter"). Recall@10 against
        exact search is at least 0.95, with or without the filter."""
        ...

    # The re-encoding job (one at a time per gallery; see ``claim``).
    def open_space(self, space: CodeSpace) -> None:
        """Create ``space`` to be filled (idempotent). Items added meanwhile need codes in
        it too: ``missing_codes`` finds them."""
        ...

    def missing_codes(self, space: CodeSpace, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` (id, PNG) pairs of items with no code in ``space`` yet."""
        ...

    def put_codes(self, space: CodeSpace, ids: Sequence[int], codes: np.ndarray) -> None:
        """Store codes of existing items in ``space`` (ids deleted meanwhile are skipped)."""
        ...

    def code_count(self, space: CodeSpace) -> int: ...

    def activate(self, space: CodeSpace) -> None:
        """Make ``space`` the one searches use, in one step, and drop older spaces' codes."""
        ...

    def claim(self, job: str, owner: str, ttl_s: float) -> bool:
        """Hold the lease on ``job`` for ``ttl_s`` (> 0) seconds, renewable by the same
        owner; False while another owner holds it. Keeps one re-encoder per gallery; a
        short ``ttl_s`` lets go of it."""
        ...

    def refresh(self) -> None:
        """Catch up with writes made by other processes (cheap when there were none)."""
        ...

    def close(self) -> None: ...


def normalised(codes: np.ndarray, metric: Metric) -> np.ndarray:
    """Codes as a store keeps them: float32, one row per item, unit length for cosine."""
    rows = np.ascontiguousarray(np.asarray(codes, np.float32).reshape(len(codes), -1))
    if metric == "cosine":
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = rows / np.maximum(norms, np.float32(1e-12))
    return rows


def check_space(space: object) -> None:
    """Refuse (``ValueError``) a code space no store may hold."""
    if not isinstance(space, CodeSpace):
        raise ValueError("space must be a CodeSpace")
    if not (
        isinstance(space.encoder_version, int)
        and space.encoder_version >= 0
        and isinstance(space.dimension, int)
        and 0 < space.dimension <= 65536
        and space.metric in ("cosine", "l2")
    ):
        raise ValueError(f"not a valid code space: {space}")


def checked_codes(codes: object, count: int, space: CodeSpace) -> np.ndarray:
    """``count`` finite codes of ``space`` as every store keeps them (see ``normalised``),
    or ``ValueError``."""
    try:
        rows = np.asarray(codes, np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"codes are not numbers: {error}") from error
    if rows.ndim == 1 and count == 1:
        rows = rows[np.newaxis]
    if count == 0 and rows.size == 0:
        return np.empty((0, space.dimension), "<f4")
    if rows.shape != (count, space.dimension):
        raise ValueError(
            f"codes have shape {rows.shape}, {count} items in a space of dimension "
            f"{space.dimension} need ({count}, {space.dimension})"
        )
    if not np.all(np.isfinite(rows)):
        raise ValueError("codes hold a value that is not a finite number")
    return normalised(rows, space.metric).astype("<f4", copy=False)
