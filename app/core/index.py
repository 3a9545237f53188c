"""The similar-cell gallery: a FAISS index over encoder codes plus the cells' PNG bytes.

Ids come from ``gallery.npz`` and are looked up in a dict, so a user-supplied id can only
ever select an existing gallery entry (no path is built from user input).
"""

from __future__ import annotations

import logging
import os
import struct
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from app.core.errors import InvalidModelError, ModelUnavailableError
from app.core.runtime import read_metadata
from contract.layout import GALLERY_FILE, GALLERY_IMAGES_FILE, INDEX_FILE
from contract.metadata import IndexMetadata

logger = logging.getLogger(__name__)

# index.faiss as faiss.write_index lays it out: a four-byte type, then d (int32), ntotal
# (int64), two unused int64, is_trained (uint8), metric_type (int32). Vectors are a uint64
# element count followed by the elements.
_INDEX_HEADER = struct.Struct("<iqqqBi")
_FLAT_TYPES = (b"IxFI", b"IxF2", b"IxFl")  # IndexFlatIP, IndexFlatL2, IndexFlat
_HNSW_FLAT = b"IHNf"
# HNSW graph: level probabilities (float64), neighbours per level (int32), each node's level
# (int32), offsets into the neighbour list (uint64), the neighbour list (int32); then five
# int32 (entry point, max level, efConstruction, efSearch, an unused one).
_HNSW_VECTORS = (8, 4, 4, 8, 4)
_HNSW_TRAILER = 5 * 4
# gallery.npz members and the most bytes each may hold per gallery entry (labels: up to 256
# characters of UTF-32), plus room for the .npy header.
_GALLERY_MEMBERS = {"ids.npy": 8, "labels.npy": 4 * 256, "offsets.npy": 8}
_NPY_HEADER_ROOM = 4096


@dataclass(frozen=True)
class Neighbour:
    id: int
    label: str
    distance: float


class GalleryImages:
    """``gallery_images.bin`` read with ``os.pread`` on a descriptor opened at load time.

    Never memory-mapped: a mapped file truncated in place (``rsync --inplace``, a manual
    copy) kills the process with SIGBUS at the next access. A short read, or bytes that are
    not a PNG, means the file changed on disk: that request gets a 503, the process lives.
    A file replaced by rename keeps serving from the descriptor's old contents.
    """

    def __init__(self, path: Path, version: int) -> None:
        self.version = version
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        self.size = os.fstat(self._fd).st_size

    def read(self, start: int, end: int) -> bytes:
        data = os.pread(self._fd, end - start, start)
        if len(data) != end - start or not data.startswith(b"\x89PNG"):
            logger.error(
                "gallery_images.bin of index version %d changed on disk since it was loaded: "
                "bytes %d-%d unreadable",
                self.version,
                start,
                end,
            )
            raise ModelUnavailableError(
                f"gallery image file of index version {self.version} changed on disk; "
                "reload the index (POST /admin/reload after publishing a new version)"
            )
        return data


@dataclass
class GalleryIndex:
    version: int
    folder: Path
    metadata: IndexMetadata
    index: Any = field(repr=False)
    ids: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    offsets: np.ndarray = field(repr=False)
    images: GalleryImages = field(repr=False)  # the PNG bytes, read by ``offsets``
    _positions: dict[int, int] = field(repr=False)

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def index_type(self) -> str:
        return self.metadata.index_type or type(self.index).__name__

    @property
    def normalizes_codes(self) -> bool:
        """Cosine indexes hold L2-normalised codes, so queries must be normalised too."""
        return self.metadata.normalize_codes or self.metadata.metric == "cosine"

    def search(self, code: np.ndarray, k: int) -> list[Neighbour]:
        """The ``k`` gallery cells nearest to one code (fewer when the gallery is smaller).

        ``distance`` is always "smaller is closer": cosine distance (1 - similarity) for a
        normalised inner-product index, Euclidean distance for an L2 index.
        """
        query = np.ascontiguousarray(np.asarray(code, np.float32).reshape(1, -1))
        if query.shape[1] != self.dimension:
            raise ValueError(f"code has {query.shape[1]} values, index expects {self.dimension}")
        if self.normalizes_codes:
            faiss.normalize_L2(query)
        scores, positions = self.index.search(query, min(k, self.size))
        return [
            Neighbour(int(self.ids[position]), str(self.labels[position]), self._distance(score))
            for score, position in zip(scores[0], positions[0], strict=True)
            if position >= 0
        ]

    def _distance(self, score: float) -> float:
        if self.index.metric_type == faiss.METRIC_L2:
            return float(np.sqrt(max(score, 0.0)))  # FAISS reports squared L2
        if self.normalizes_codes:
            return float(max(1.0 - score, 0.0))  # rounding can push similarity past 1
        return float(-score)  # raw inner product: larger was closer

    def image_png(self, item_id: int) -> bytes | None:
        """The gallery cell's PNG bytes, or None for an id the gallery does not hold."""
        position = self._positions.get(item_id)
        if position is None:
            return None
        return self.images.read(int(self.offsets[position]), int(self.offsets[position + 1]))

    def describe(self) -> dict[str, Any]:
        encoder = self.metadata.encoder
        return {
            "name": self.folder.parent.name,
            "version": self.version,
            "size": self.size,
            "type": self.index_type,
            "dimension": self.dimension,
            "metric": self.metadata.metric,
            "encoder": None if encoder is None else encoder.model_dump(),
            "metrics": self.metadata.metrics,
        }


def load_index(folder: Path) -> GalleryIndex:
    """Load and cross-check one index version; any inconsistency refuses the whole version."""
    metadata = read_metadata(folder)
    if not isinstance(metadata, IndexMetadata):
        raise InvalidModelError(f"{folder}: {metadata.name} metadata is not IndexMetadata")
    # One query is small: OpenMP threads only contend with the server's other threads
    # (measured p99 of one exact query on a busy 2-core machine: 215-489 ms vs 2-8 ms).
    faiss.omp_set_num_threads(1)
    try:
        check_index_file(folder / INDEX_FILE)
        index = faiss.read_index(str(folder / INDEX_FILE))
        check_gallery_archive(folder / GALLERY_FILE, int(index.ntotal))
        with np.load(folder / GALLERY_FILE, allow_pickle=False) as gallery:
            ids = gallery["ids"].astype(np.int64)
            labels = gallery["labels"].astype(str)
            offsets = gallery["offsets"].astype(np.int64)
        images = GalleryImages(folder / GALLERY_IMAGES_FILE, metadata.version)
    except (OSError, RuntimeError, KeyError, ValueError, zipfile.BadZipFile) as error:
        logger.error("%s: cannot read index files: %s", folder, error)
        raise InvalidModelError(
            f"{folder}: cannot read index files ({type(error).__name__}; see the server log)"
        ) from error
    count = int(index.ntotal)
    problems = []
    if not (len(ids) == len(labels) == count and len(offsets) == count + 1):
        problems.append(
            f"{count} index entries but {len(ids)} ids, {len(labels)} labels, "
            f"{len(offsets)} offsets"
        )
    elif count and (offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > images.size):
        problems.append("offsets do not fit gallery_images.bin")
    if len(set(ids.tolist())) != len(ids):
        problems.append("gallery ids are not unique")
    declared_dimension = metadata.dimension
    if declared_dimension not in (None, index.d):
        problems.append(f"metadata dimension {declared_dimension} != index dimension {index.d}")
    if problems:
        raise InvalidModelError(f"{folder}: " + "; ".join(problems))
    return GalleryIndex(
        version=metadata.version,
        folder=folder,
        metadata=metadata,
        index=index,
        ids=ids,
        labels=labels,
        offsets=offsets,
        images=images,
        _positions={int(item_id): position for position, item_id in enumerate(ids)},
    )


def check_index_file(path: Path) -> None:
    """Refuse an ``index.faiss`` whose headers claim more data than the file holds.

    faiss allocates (and zero-fills) every vector at the size its header states before
    reading it, so a 100-byte file claiming 768M floats takes 3 GB. This walks the headers
    of the index types training writes (flat, and HNSW over flat), checking each declared
    size against the bytes that remain, and refuses any other type.
    """
    size = path.stat().st_size
    with path.open("rb") as file:
        _check_index(file, size, path.name)
        if file.tell() != size:
            raise InvalidModelError(
                f"{path.name}: {size - file.tell()} unexpected bytes at the end"
            )


def _check_index(file: IO[bytes], size: int, name: str) -> tuple[int, int]:
    """Walk one index's headers (recursively for HNSW storage); returns ``(d, ntotal)``."""
    kind = file.read(4)
    header = file.read(_INDEX_HEADER.size)
    if len(header) != _INDEX_HEADER.size:
        raise InvalidModelError(f"{name}: truncated header")
    d, ntotal, _, _, _, metric = _INDEX_HEADER.unpack(header)
    if not (0 < d <= 65536 and ntotal >= 0 and metric in (0, 1)):
        raise InvalidModelError(f"{name}: implausible header (d={d}, ntotal={ntotal})")
    if kind in _FLAT_TYPES:
        _skip_vector(file, size, name, element_bytes=4, expected=ntotal * d)
    elif kind == _HNSW_FLAT:
        for position, element_bytes in enumerate(_HNSW_VECTORS):
            expected = {2: ntotal, 3: ntotal + 1}.get(position)
            _skip_vector(file, size, name, element_bytes, expected)
        file.seek(_HNSW_TRAILER, os.SEEK_CUR)
        if _check_index(file, size, name) != (d, ntotal):
            raise InvalidModelError(f"{name}: HNSW storage does not match its graph")
    else:
        raise InvalidModelError(f"{name}: unsupported index type {kind!r}")
    return d, ntotal


def _skip_vector(
    file: IO[bytes], size: int, name: str, element_bytes: int, expected: int | None
) -> None:
    raw = file.read(8)
    if len(raw) != 8:
        raise InvalidModelError(f"{name}: truncated")
    (count,) = struct.unpack("<Q", raw)
    if expected is not None and count != expected:
        raise InvalidModelError(f"{name}: a vector of {count} elements where {expected} belong")
    if count * element_bytes > size - file.tell():
        raise InvalidModelError(
            f"{name}: header claims {count * element_bytes} bytes, the file has "
            f"{size - file.tell()} left"
        )
    file.seek(count * element_bytes, os.SEEK_CUR)


def check_gallery_archive(path: Path, count: int) -> None:
    """Refuse a ``gallery.npz`` whose members would unpack to more than ``count`` entries need.

    The sizes come from the zip's central directory, which ``zipfile`` also enforces while
    inflating (it never returns more than a member's stated size), so a zip bomb is refused
    before one byte is inflated.
    """
    limits = {
        member: _NPY_HEADER_ROOM + (count + 1) * item_bytes
        for member, item_bytes in _GALLERY_MEMBERS.items()
    }
    if path.stat().st_size > sum(limits.values()) + _NPY_HEADER_ROOM:
        raise InvalidModelError(f"{path.name}: larger than {count} entries can need")
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            limit = limits.get(info.filename)
            if limit is None:
                raise InvalidModelError(f"{path.name}: unexpected member {info.filename!r}")
            if info.file_size > limit:
                raise InvalidModelError(
                    f"{path.name}: {info.filename} unpacks to {info.file_size} bytes, "
                    f"more than {limit} for {count} entries"
                )


def check_matches_encoder(index: GalleryIndex, code_dim: int, encoder_label: str) -> None:
    """An index only makes sense for codes of its own dimension: refuse anything else."""
    if index.dimension != code_dim:
        raise InvalidModelError(
            f"{index.folder}: index dimension {index.dimension} does not match "
            f"{encoder_label} code_dim {code_dim}"
        )
