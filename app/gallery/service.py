"""The living gallery as one worker process runs it, over any ``GalleryStore``.

One ``GalleryService`` per worker process, built by the lifespan. It

* seeds the store from the default offline index (``models/malaria_index/<v>/``): its cells
  become ``offline`` items, named by their content digest, with the index's own codes
  (read back from FAISS: 0.5 ms for 22,000 codes, where encoding those cells again costs
  about 7 ms a cell on two cores, 2.5 minutes). A newer offline version replaces the
  offline items and keeps the added ones. Seeding is idempotent, and one worker at a time
  does it (a lease);
* refreshes the store every ``REFRESH_INTERVAL_S`` on a thread of its own, so that every
  worker sees another's writes within a second;
* re-encodes the gallery when the default autoencoder version is not the one the active
  code space was encoded with: one worker of the whole gallery (a lease) fills the new
  space in small batches on a background thread, paced so that /similar keeps most of
  the CPU, and activates it when every item has its code; until then searches use the
  previous space and its encoder;
* encodes additions with the active space's encoder, again with the new one when the
  space switched meanwhile (``StaleSpaceError``).

Everything here blocks (the store, TensorFlow, Pillow): the routes call it from worker
threads, except ``add``, which awaits the micro-batcher itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from anyio import to_thread

from app.core.errors import ServiceError
from app.core.index import GalleryIndex
from app.core.registry import ModelRegistry, ModelSet
from app.core.runtime import LoadedModel, load_autoencoder
from app.gallery.images import StoredImage, model_batch, offline_image, stored_pixels
from app.gallery.store import (
    MAX_LABEL_CHARS,
    MAX_NOTE_CHARS,
    UNLABELLED,
    Added,
    CodeSpace,
    GalleryItem,
    GalleryStore,
    Metric,
    Neighbour,
    NewItem,
    StaleSpaceError,
    normalised,
    valid_label,
    valid_note,
)
from app.settings import Settings
from contract.layout import AUTOENCODER
from contract.signatures import ENCODE, ENCODE_CODES

logger = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 0.25  # every worker sees another's writes within a second
JOB_INTERVAL_S = 0.5  # how often the background job looks for work (seeding, re-encoding)
LEASE_TTL_S = 15.0  # a lease a killed worker held frees itself after this long
RELEASE_TTL_S = 1e-3  # claiming for this long is letting go (``claim`` takes no zero)
SEED_JOB = "seed-offline"
REENCODE_JOB = "reencode"
SEED_BATCH = 512  # offline cells per store transaction
# Cells per encoder call for additions and re-encoding. The autoencoder encodes each cell in
# its 8 symmetries: on two cores a call of 8 cells costs about a quarter less per cell than
# one of 32 (encode_codes: 5.9 against 7.9 ms a cell), and a call holds the worker's model
# thread for less time (about 50 ms), which a search arriving meanwhile waits for.
ENCODE_CHUNK = 8
REENCODE_BATCH = ENCODE_CHUNK
PROGRESS_INTERVAL_S = 2.0  # how often a fill's progress is counted again in the store
STARTUP_WAIT_S = 300.0  # how long a worker waits for another to seed an empty gallery
STALE_RETRIES = 3  # additions encoded again after a space switch, at most
BUSY_WINDOW_S = 1.0  # a search this recent means the worker is serving: pace re-encoding


def codes_signature(encoder: LoadedModel[Any]) -> str:
    """The signature giving ``encoder``'s codes alone: ``encode_codes`` where the version
    loaded it (``encode`` without the out-of-distribution score, the same codes for a third
    less work), else ``encode``. Additions and re-encoding need no score; /similar reports
    it, so it calls ``encode``."""
    return ENCODE_CODES if ENCODE_CODES in encoder.outputs else ENCODE


def codes_of(encoder: LoadedModel[Any], images: Sequence[Any]) -> np.ndarray:
    """``images``' codes by ``encoder`` (see ``codes_signature``); the store normalises
    them for its space."""
    return encoder.run(codes_signature(encoder), model_batch(images, encoder.height, encoder.width))


class GalleryUnavailableError(ServiceError):
    """The gallery cannot answer now: its store is unreachable, it holds no codes yet, or
    the encoder of its codes is not loaded."""

    status_code = 503


class GalleryInputError(ServiceError):
    """What a user said about a cell (label, note) does not fit the gallery's rules."""

    status_code = 422


def check_label(label: str) -> str:
    """A label: 1 to ``MAX_LABEL_CHARS`` printable characters (no control characters)."""
    return _checked(label, valid_label, f"label must have 1 to {MAX_LABEL_CHARS}")


def check_note(note: str) -> str:
    """A note: at most ``MAX_NOTE_CHARS`` printable characters, on one line."""
    return _checked(note, valid_note, f"note must have at most {MAX_NOTE_CHARS}")


def _checked(text: str, valid: Callable[[object], bool], rule: str) -> str:
    if not valid(text):
        raise GalleryInputError(
            f"{rule} printable characters (no control characters or line breaks), "
            f"got {len(text)} characters"
        )
    return text


@dataclass(frozen=True)
class Progress:
    """A background fill: ``done`` of ``total`` items have codes of ``encoder_version``."""

    encoder_version: int
    done: int
    total: int


@dataclass(frozen=True)
class GalleryState:
    """What /readyz and /models say about the gallery; refreshed by the background job, so
    the probes never wait for the store."""

    store: str
    ready: bool
    reason: str | None = None
    encoder_version: int | None = None  # of the active space: what /similar searches
    dimension: int | None = None
    metric: str | None = None
    items: int | None = None
    labels: dict[str, int] | None = None
    offline_version: int | None = None  # the offline index this worker seeded from
    seeding: Progress | None = None
    reencoding: Progress | None = None


Encode = Callable[[LoadedModel[Any], np.ndarray], Awaitable[np.ndarray]]


class GalleryService:
    """See the module docstring. ``models`` returns what the registry serves now;
    ``load_encoder(version)`` loads an autoencoder version the registry does not keep (the
    active space's, when the registry has moved on), or raises."""

    def __init__(
        self,
        store: GalleryStore,
        models: Callable[[], ModelSet],
        load_encoder: Callable[[int], LoadedModel[Any]],
        *,
        store_name: str = "sqlite",
        reencode_share: float = 0.1,
        owner: str | None = None,
    ) -> None:
        if not 0 < reencode_share <= 1:
            raise ValueError(f"reencode_share must be in (0, 1], got {reencode_share}")
        self.store = store
        self.store_name = store_name
        self.reencode_share = reencode_share
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._models = models
        self._load_encoder = load_encoder
        self._own_encoders: dict[int, LoadedModel[Any]] = {}  # active encoders not in models
        self._active: CodeSpace | None = None  # the store's, as of the last refresh
        self._seeded: tuple[int, int] | None = None  # (version, id) of the index seeded
        self._seeding: Progress | None = None
        self._reencoding: Progress | None = None
        self._last_query = -BUSY_WINDOW_S
        self._progress_counted = -PROGRESS_INTERVAL_S  # when another worker's fill was counted
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._state = GalleryState(store_name, ready=False, reason="starting")
        self._last_error: dict[str, str] = {}

    # Lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Catch up with the store, seed an empty gallery (or wait while another worker
        does), then start the refresh and job threads. Blocks: call it from a thread."""
        self._logged("start", self._first_sync)
        self._logged("state", self._update_state)
        for name, loop in (("gallery-refresh", self._refresh_loop), ("gallery-job", self._job)):
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the threads (a batch being encoded finishes first), then the store."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()
        with contextlib.suppress(Exception):
            self.store.close()

    def _first_sync(self) -> None:
        self._refresh()
        self._ensure_active_encoder()
        began = time.monotonic()
        while not self._stopping.is_set():
            if self.store.active_space() is not None or self._models().index is None:
                return  # serving, or nothing to seed from yet (the job seeds it later)
            if self._seed_if_needed():
                return
            if time.monotonic() - began > STARTUP_WAIT_S:
                logger.warning("gallery: still empty after %.0f s; serving on", STARTUP_WAIT_S)
                return
            self._stopping.wait(REFRESH_INTERVAL_S)  # another worker seeds it
            self._refresh()

    def _refresh(self) -> None:
        """Catch up with the other processes' writes, their switch of space included."""
        self.store.refresh()
        self._active = self.store.active_space()

    def _refresh_loop(self) -> None:
        while not self._stopping.wait(REFRESH_INTERVAL_S):
            self._logged("refresh", self._refresh)

    def _job(self) -> None:
        while not self._stopping.wait(JOB_INTERVAL_S):
            self._logged("encoder", self._ensure_active_encoder)
            self._logged("seeding", self._seed_if_needed)
            self._logged("re-encoding", self._reencode)
            self._logged("state", self._update_state)

    def _logged(self, what: str, work: Callable[[], object]) -> None:
        """Run ``work``; a failure is logged (once while it repeats) and the loop goes on:
        a store that is down for a while must not end the background work for good."""
        try:
            work()
        except Exception as error:
            text = f"{type(error).__name__}: {error}"
            if self._last_error.get(what) != text:
                logger.exception("gallery %s failed", what)
            self._last_error[what] = text
            if what == "state":
                self._state = GalleryState(
                    self.store_name, ready=False, reason="the gallery store is unreachable"
                )
        else:
            self._last_error.pop(what, None)

    # What serves -----------------------------------------------------------------------

    @property
    def state(self) -> GalleryState:
        """The last snapshot, with the progress of a fill this worker is running now."""
        return replace(self._state, seeding=self._seeding, reencoding=self._reencoding)

    def _update_state(self) -> None:
        space = self.store.active_space()
        items, labels = self.store.count(), self.store.labels()
        index = self._models().index
        reason = None
        if space is None:
            reason = (
                "the gallery holds no codes yet: it is seeded from malaria_index once that loads"
                if index is None
                else "the gallery is being seeded from the offline index"
            )
        elif self.encoder(space.encoder_version) is None:
            reason = f"malaria_autoencoder version {space.encoder_version} is loading"
        self._state = GalleryState(
            self.store_name,
            ready=reason is None,
            reason=reason,
            encoder_version=None if space is None else space.encoder_version,
            dimension=None if space is None else space.dimension,
            metric=None if space is None else space.metric,
            items=items,
            labels=labels,
            offline_version=None if self._seeded is None else self._seeded[0],
        )

    def encoder(self, version: int) -> LoadedModel[Any] | None:
        """Autoencoder ``version`` if loaded (by the registry, or by this service)."""
        models = self._models()
        candidates: list[object] = [models.autoencoder, *models.encoders.values()]
        versions = models.versions.get(AUTOENCODER)
        if versions is not None:
            candidates += list(versions.loaded.values())
        for candidate in candidates:
            if isinstance(candidate, LoadedModel) and candidate.version == version:
                return candidate
        return self._own_encoders.get(version)

    def _ensure_active_encoder(self) -> None:
        """Load the active space's encoder when the registry no longer keeps it (several
        autoencoder versions arrived at once): /similar needs it until the switch."""
        space = self.store.active_space()
        if space is None:
            return
        if self.encoder(space.encoder_version) is None:
            logger.info("gallery: loading malaria_autoencoder version %d", space.encoder_version)
            self._own_encoders[space.encoder_version] = self._load_encoder(space.encoder_version)
        for version in [v for v in self._own_encoders if v != space.encoder_version]:
            del self._own_encoders[version]

    @property
    def active_space(self) -> CodeSpace | None:
        """The active space as of the last refresh (or this worker's own switch): read
        without calling the store, so the event loop may ask."""
        return self._active

    def searchable(self) -> tuple[CodeSpace, LoadedModel[Any]]:
        """The active space and its encoder: what a query is encoded with and searched in.
        Reads no store (see ``active_space``)."""
        space = self._active
        if space is None:
            raise GalleryUnavailableError(self._state.reason or "the gallery holds no codes yet")
        encoder = self.encoder(space.encoder_version)
        if encoder is None:
            raise GalleryUnavailableError(
                f"malaria_autoencoder version {space.encoder_version}, which encoded the "
                "gallery's codes, is loading; retry shortly"
            )
        return space, encoder

    def note_query(self) -> None:
        """A search or an addition is being served: the re-encoding slows down for a while."""
        self._last_query = time.monotonic()

    # Reads and writes ------------------------------------------------------------------

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Store failures become a 503 (logged with their traceback); refusals pass."""
        try:
            yield
        except (ServiceError, StaleSpaceError):
            raise
        except Exception as error:
            logger.exception("gallery store call failed")
            raise GalleryUnavailableError(
                "the gallery store is unreachable; see the server log"
            ) from error

    def search(
        self, space: CodeSpace, code: np.ndarray, k: int, label: str | None
    ) -> list[Neighbour] | None:
        """The ``k`` nearest items to ``code`` (encoded for ``space``), of ``label`` only
        when given; None when ``space`` stopped being the active one meanwhile (encode
        the query again)."""
        with self._reachable():
            if self.store.active_space() != space:
                return None
            query = normalised(np.asarray(code).reshape(1, -1), space.metric)[0]
            found = self.store.search(query, k, label)
            return found if self.store.active_space() == space else None

    def get(self, item_id: int) -> GalleryItem | None:
        with self._reachable():
            return self.store.get(item_id)

    def image(self, item_id: int) -> bytes | None:
        with self._reachable():
            return self.store.image(item_id)

    def delete(self, item_id: int) -> bool:
        with self._reachable():
            return self.store.delete(item_id)

    def items(self, label: str | None, limit: int, after: int | None) -> list[GalleryItem]:
        with self._reachable():
            return self.store.items(label, limit, after)

    def count(self, label: str | None = None) -> int:
        with self._reachable():
            return self.store.count(label)

    async def add(
        self, cells: Sequence[StoredImage], label: str, note: str, encode: Encode
    ) -> tuple[CodeSpace, list[Added]]:
        """Store ``cells`` under ``label`` in one transaction, encoded by ``encode`` (the
        route's micro-batcher call) with the active space's encoder; encoded again with
        the new one when the space switched meanwhile. Returns the space the codes went to
        and each cell's item (the existing one for a cell already stored)."""
        check_label(label)
        check_note(note)
        items = [NewItem(cell.png, cell.digest, label, note) for cell in cells]
        for _ in range(STALE_RETRIES):
            space, encoder = self.searchable()
            batch = await to_thread.run_sync(
                model_batch, [cell.image for cell in cells], encoder.height, encoder.width
            )
            codes = await encode(encoder, batch)
            try:
                with self._reachable():
                    added = await to_thread.run_sync(self.store.add, items, codes, space)
            except StaleSpaceError:
                with self._reachable():
                    await to_thread.run_sync(self._refresh)
                continue
            return space, added
        raise GalleryUnavailableError(
            "the gallery's code space changed during each attempt to add; retry"
        )

    # Seeding ---------------------------------------------------------------------------

    def _seed_if_needed(self) -> bool:
        """Seed from the default offline index unless this worker already did (since it
        loaded that version); False while another worker holds the lease."""
        models = self._models()
        index = models.index
        if index is None:
            return True
        key = (index.version, id(index))
        if self._seeded == key:
            return True
        encoder = models.encoders.get(index.version)
        if encoder is None:
            return True
        if not self.store.claim(SEED_JOB, self.owner, LEASE_TTL_S):
            return False
        try:
            complete = self._seed(index, encoder.version)
        finally:
            self._seeding = None
            self.store.claim(SEED_JOB, self.owner, RELEASE_TTL_S)
        if complete:
            self._seeded = key
        return complete

    def _seed(self, index: GalleryIndex, encoder_version: int) -> bool:
        """Add every cell of ``index`` as an ``offline`` item (a no-op for cells already
        stored), then drop the offline items it does not hold. Into a new space with the
        index's own codes when the gallery is empty; else into the active space, with the
        index's codes when it is theirs, or encoded by the active space's encoder."""
        began = time.monotonic()
        metric: Metric = "cosine" if index.normalizes_codes else "l2"
        own_space = CodeSpace(encoder_version, index.dimension, metric)
        active = self.store.active_space()
        space = own_space if active is None else active
        if active is None:
            self.store.open_space(own_space)
        reuse_codes = space == own_space
        if not reuse_codes and self.encoder(space.encoder_version) is None:
            raise RuntimeError(
                f"malaria_autoencoder version {space.encoder_version} is not loaded yet"
            )
        codes = index.index.reconstruct_n(0, index.size) if reuse_codes and index.size else None
        keep: set[int] = set()
        added = 0
        for start in range(0, index.size, SEED_BATCH):
            if self._stopping.is_set():
                return False
            batch_began = time.monotonic()
            positions = range(start, min(start + SEED_BATCH, index.size))
            cells = [offline_image(index.image_png(int(index.ids[p])) or b"") for p in positions]
            labels = [check_label(str(index.labels[p]) or UNLABELLED) for p in positions]
            items = [
                NewItem(cell.png, cell.digest, label, source="offline")
                for cell, label in zip(cells, labels, strict=True)
            ]
            if codes is not None:
                rows = codes[positions.start : positions.stop]
            else:
                rows = self._encode_images(space, [cell.image for cell in cells])
            results = self.store.add(items, rows, space)
            keep.update(result.item.id for result in results)
            added += sum(result.created for result in results)
            self._seeding = Progress(space.encoder_version, positions.stop, index.size)
            self.store.claim(SEED_JOB, self.owner, LEASE_TTL_S)
            if codes is None:
                self._pace(time.monotonic() - batch_began)
        if active is None:
            self.store.activate(own_space)
            self._active = self.store.active_space()
        removed = self.store.delete_offline_except(keep)
        logger.info(
            "gallery: offline index version %d seeded in %.1f s (%d cells, %d new, %d old "
            "offline items removed)",
            index.version,
            time.monotonic() - began,
            index.size,
            added,
            removed,
        )
        return True

    def _encode_images(self, space: CodeSpace, images: Sequence[Any]) -> np.ndarray:
        encoder = self.encoder(space.encoder_version)
        if encoder is None:
            raise RuntimeError(f"malaria_autoencoder version {space.encoder_version} unloaded")
        return codes_of(encoder, images)

    def _put_encoded(self, space: CodeSpace, encoder: LoadedModel[Any], pairs: list[Any]) -> None:
        """Encode stored cells (``(id, png)`` pairs) and store their codes in ``space``."""
        codes = codes_of(encoder, [stored_pixels(png) for _, png in pairs])
        self.store.put_codes(space, [item_id for item_id, _ in pairs], codes)

    # Re-encoding -----------------------------------------------------------------------

    def _reencode(self) -> None:
        """Bring the active space to the default autoencoder version (see the module
        docstring); returns when done, when the lease is lost or when the target changes."""
        target = self._models().autoencoder
        active = self.store.active_space()
        if target is None or active is None:
            self._reencoding = None
            return
        if active.encoder_version == target.version:
            self._reencoding = None
            return
        space = CodeSpace(target.version, int(target.metadata.code_dim), active.metric)
        if not self.store.claim(REENCODE_JOB, self.owner, LEASE_TTL_S):
            self._reencoding = self._progress_elsewhere(space)
            return
        try:
            self._fill(space, target)
        finally:
            self.store.claim(REENCODE_JOB, self.owner, RELEASE_TTL_S)

    def _progress_elsewhere(self, space: CodeSpace) -> Progress:
        """Another worker fills ``space``: how far it got, as the store says, counted again
        every ``PROGRESS_INTERVAL_S`` (counting a space's codes reads all of them, and this
        worker serves searches meanwhile)."""
        last = self._reencoding
        now = time.monotonic()
        if (
            last is not None
            and last.encoder_version == space.encoder_version
            and now - self._progress_counted < PROGRESS_INTERVAL_S
        ):
            return last
        try:
            done = self.store.code_count(space)
        except StaleSpaceError:
            done = 0
        self._progress_counted = now
        return Progress(space.encoder_version, done, self.store.count())

    def _fill(self, space: CodeSpace, encoder: LoadedModel[Any]) -> None:
        began = time.monotonic()
        self.store.open_space(space)
        logger.info(
            "gallery: re-encoding for malaria_autoencoder version %d", space.encoder_version
        )
        # Progress is counted in the store every PROGRESS_INTERVAL_S and by the batch between
        # (deleted items are skipped, so the count in between may run a little ahead).
        done, total, counted = self.store.code_count(space), self.store.count(), began
        while True:
            # Paced on everything a batch costs: reading it, encoding it, storing its codes
            # and renewing the lease.
            batch_began = time.monotonic()
            pairs = self.store.missing_codes(space, REENCODE_BATCH)
            if not pairs:
                break
            if self._stopping.is_set() or self._models().autoencoder is not encoder:
                return  # shutting down, or the default changed again: the next round resumes
            self._put_encoded(space, encoder, pairs)
            done += len(pairs)
            if batch_began - counted >= PROGRESS_INTERVAL_S:
                done, total, counted = self.store.code_count(space), self.store.count(), batch_began
            self._reencoding = Progress(space.encoder_version, min(done, total), total)
            if not self.store.claim(REENCODE_JOB, self.owner, LEASE_TTL_S):
                return  # this worker stalled past the lease: another one carries on
            self._pace(time.monotonic() - batch_began)
        self.store.activate(space)
        self._active = self.store.active_space()
        # Items added with the previous space's codes while it was still active have none
        # in this one: give them theirs now.
        while pairs := self.store.missing_codes(space, REENCODE_BATCH):
            self._put_encoded(space, encoder, pairs)
        self._reencoding = None
        logger.info(
            "gallery: now searching malaria_autoencoder version %d codes (re-encoded in %.1f s)",
            space.encoder_version,
            time.monotonic() - began,
        )

    def _pace(self, spent_s: float) -> None:
        """Keep the re-encoding to ``reencode_share`` of the time while this worker serves
        searches; when it serves none, only yield the interpreter lock."""
        busy = time.monotonic() - self._last_query < BUSY_WINDOW_S
        pause = spent_s * (1 - self.reencode_share) / self.reencode_share if busy else 0.001
        self._stopping.wait(pause)


def open_gallery(settings: Settings, registry: ModelRegistry) -> GalleryService:
    """This worker's gallery service (not started) over the store the settings name: Milvus
    with ``GALLERY_URL``, else SQLite under ``GALLERY_DIR``. Blocks (opens the store)."""
    store: GalleryStore
    if settings.gallery_url:
        from app.gallery.milvus_store import MilvusGalleryStore

        store, name = MilvusGalleryStore(settings.gallery_url), "milvus"
    else:
        import faiss

        from app.gallery.sqlite_store import SqliteGalleryStore

        # A search is one query: OpenMP threads would only contend with the worker's other
        # threads. ``app.core.index`` sets this when an offline index loads; a gallery may
        # serve without one.
        faiss.omp_set_num_threads(1)
        store, name = SqliteGalleryStore(settings.gallery_dir), "sqlite"

    def load_encoder(version: int) -> LoadedModel[Any]:
        return load_autoencoder(registry.model_dir / AUTOENCODER / str(version), registry.device)

    return GalleryService(
        store,
        lambda: registry.current,
        load_encoder,
        store_name=name,
        reencode_share=settings.gallery_reencode_share,
    )
