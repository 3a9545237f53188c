"""The similar-cell gallery: a FAISS index over encoder codes plus the cells' PNG bytes.

Ids come from ``gallery.npz`` and are looked up in a dict, so a user-supplied id can only
ever select an existing gallery entry (no path is built from user input).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from app.core.errors import InvalidModelError
from app.core.runtime import read_metadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Neighbour:
    id: int
    label: str
    distance: float


@dataclass
class GalleryIndex:
    version: int
    folder: Path
    metadata: dict[str, Any]
    index: Any = field(repr=False)
    ids: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    offsets: np.ndarray = field(repr=False)
    images: np.ndarray = field(repr=False)  # memory-mapped PNG bytes, sliced by ``offsets``
    _positions: dict[int, int] = field(repr=False)

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def index_type(self) -> str:
        return str(self.metadata.get("index_type") or type(self.index).__name__)

    @property
    def normalizes_codes(self) -> bool:
        """Cosine indexes hold L2-normalised codes, so queries must be normalised too."""
        return bool(self.metadata.get("normalize_codes")) or self.metadata.get("metric") == "cosine"

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
        return self.images[self.offsets[position] : self.offsets[position + 1]].tobytes()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.folder.parent.name,
            "version": self.version,
            "size": self.size,
            "type": self.index_type,
            "dimension": self.dimension,
            "metric": self.metadata.get("metric"),
            "encoder": self.metadata.get("encoder"),
            "metrics": self.metadata.get("metrics", {}),
        }


def load_index(folder: Path) -> GalleryIndex:
    """Load and cross-check one index version; any inconsistency refuses the whole version."""
    metadata = read_metadata(folder)
    # One query is small: OpenMP threads only contend with the server's other threads
    # (measured p99 of one exact query on a busy 2-core machine: 215-489 ms vs 2-8 ms).
    faiss.omp_set_num_threads(1)
    try:
        index = faiss.read_index(str(folder / "index.faiss"))
        with np.load(folder / "gallery.npz", allow_pickle=False) as gallery:
            ids = gallery["ids"].astype(np.int64)
            labels = gallery["labels"].astype(str)
            offsets = gallery["offsets"].astype(np.int64)
        images_path = folder / "gallery_images.bin"
        images = (
            np.memmap(images_path, dtype=np.uint8, mode="r")
            if images_path.stat().st_size
            else np.zeros(0, np.uint8)
        )
    except (OSError, RuntimeError, KeyError, ValueError) as error:
        raise InvalidModelError(f"{folder}: cannot read index files: {error}") from error
    count = int(index.ntotal)
    problems = []
    if not (len(ids) == len(labels) == count and len(offsets) == count + 1):
        problems.append(
            f"{count} index entries but {len(ids)} ids, {len(labels)} labels, "
            f"{len(offsets)} offsets"
        )
    elif count and (offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > len(images)):
        problems.append("offsets do not fit gallery_images.bin")
    if len(set(ids.tolist())) != len(ids):
        problems.append("gallery ids are not unique")
    declared_dimension = metadata.get("dimension")
    if declared_dimension not in (None, index.d):
        problems.append(f"metadata dimension {declared_dimension} != index dimension {index.d}")
    if problems:
        raise InvalidModelError(f"{folder}: " + "; ".join(problems))
    return GalleryIndex(
        version=int(folder.name),
        folder=folder,
        metadata=metadata,
        index=index,
        ids=ids,
        labels=labels,
        offsets=offsets,
        images=images,
        _positions={int(item_id): position for position, item_id in enumerate(ids)},
    )


def check_matches_encoder(index: GalleryIndex, code_dim: int, encoder_label: str) -> None:
    """An index only makes sense for codes of its own dimension: refuse anything else."""
    if index.dimension != code_dim:
        raise InvalidModelError(
            f"{index.folder}: index dimension {index.dimension} does not match "
            f"{encoder_label} code_dim {code_dim}"
        )
