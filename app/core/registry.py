"""Which model versions serve: newest-version discovery, validation and atomic hot swaps.

Requests read ``registry.current`` (an immutable ``ModelSet``) once, so a swap never changes
the models under a request in flight. A version that fails validation is remembered as
refused, logged once, and the previously loaded version keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.errors import InvalidModelError
from app.core.index import GalleryIndex, check_matches_encoder, load_index
from app.core.runtime import LoadedModel, load_autoencoder, load_classifier, settle_heap

logger = logging.getLogger(__name__)

CLASSIFIER = "signs_classifier"
AUTOENCODER = "malaria_autoencoder"
INDEX = "malaria_index"
COMPONENTS = (CLASSIFIER, AUTOENCODER, INDEX)


@dataclass(frozen=True)
class ModelSet:
    """Everything one request may use. ``encoder`` is the autoencoder version the index was
    built with (its codes live in the same space), which may be older than ``autoencoder``."""

    classifier: LoadedModel | None = None
    autoencoder: LoadedModel | None = None
    index: GalleryIndex | None = None
    encoder: LoadedModel | None = None


def available_versions(root: Path) -> list[int]:
    """Complete version folders under ``root``, newest first (hidden ``.tmp-*`` ignored)."""
    if not root.is_dir():
        return []
    return sorted(
        (int(path.name) for path in root.iterdir() if path.is_dir() and path.name.isdigit()),
        reverse=True,
    )


class _EncoderNotReadyError(Exception):
    """The index cannot be checked yet because no autoencoder is loaded."""


class ModelRegistry:
    def __init__(
        self,
        model_dir: Path,
        device: str,
        on_change: Callable[[ModelSet], None] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        self.current = ModelSet()
        self.problems: dict[str, str] = {}  # component -> why it is not loaded
        self.refused: dict[str, dict[int, str]] = {name: {} for name in COMPONENTS}
        self._refused_stamps: dict[tuple[str, int], float] = {}
        self._on_change = on_change
        self._lock = threading.Lock()

    def missing(self) -> dict[str, str]:
        """Components that cannot serve, with the reason; empty when ready."""
        loaded = {
            CLASSIFIER: self.current.classifier,
            AUTOENCODER: self.current.autoencoder,
            INDEX: self.current.index,
        }
        return {
            name: self.problems.get(name, "not loaded yet")
            for name, model in loaded.items()
            if model is None
        }

    def missing_reason(self, name: str) -> str:
        """One line for a 503: why ``name`` cannot serve."""
        return f"{name} is not loaded: {self.problems.get(name, 'not loaded yet')}"

    def reload(self) -> list[str]:
        """Load any newer valid version and swap it in; returns what changed (for logs/API).

        Blocking (TensorFlow loads): call it from a worker thread, never the event loop.
        """
        with self._lock:
            old = self.current
            classifier = self._newest(CLASSIFIER, old.classifier, load_classifier)
            autoencoder = self._newest(AUTOENCODER, old.autoencoder, load_autoencoder)
            index, encoder = self._newest_index(old, autoencoder)
            new = ModelSet(classifier, autoencoder, index, encoder)
            changes = [
                f"{name} {_version(before)} -> {_version(after)}"
                for name, before, after in (
                    (CLASSIFIER, old.classifier, classifier),
                    (AUTOENCODER, old.autoencoder, autoencoder),
                    (INDEX, old.index, index),
                )
                if after is not before
            ]
            if changes:
                self.current = new  # one reference assignment: the swap is atomic
                logger.info("models now serving: %s", ", ".join(changes))
                if self._on_change is not None:
                    self._on_change(new)
                del old  # in-flight requests may still hold it; otherwise it is reclaimed now
                settle_heap()
            return changes

    def _newest(
        self,
        name: str,
        loaded: LoadedModel | None,
        loader: Callable[[Path, str], LoadedModel],
    ) -> LoadedModel | None:
        root = self.model_dir / name
        for version in self._candidates(name, loaded):
            try:
                model = loader(root / str(version), self.device)
            except Exception as error:  # any failure refuses the version, never the server
                self._refuse(name, version, error)
                continue
            self.problems.pop(name, None)
            self.refused[name].pop(version, None)
            return model
        return loaded

    def _newest_index(
        self, old: ModelSet, autoencoder: LoadedModel | None
    ) -> tuple[GalleryIndex | None, LoadedModel | None]:
        root = self.model_dir / INDEX
        for version in self._candidates(INDEX, old.index):
            try:
                index = load_index(root / str(version))
                encoder = self._encoder_for(index, autoencoder, old.encoder)
                label = f"{AUTOENCODER} version {encoder.version}"
                check_matches_encoder(index, encoder.metadata["code_dim"], label)
            except _EncoderNotReadyError:
                self.problems[INDEX] = f"waits for {AUTOENCODER}, which is not loaded"
                break
            except Exception as error:
                self._refuse(INDEX, version, error)
                continue
            self.problems.pop(INDEX, None)
            self.refused[INDEX].pop(version, None)
            return index, encoder
        return old.index, old.encoder

    def _encoder_for(
        self, index: GalleryIndex, autoencoder: LoadedModel | None, previous: LoadedModel | None
    ) -> LoadedModel:
        """The autoencoder version named in the index metadata, loaded if it is on disk;
        otherwise the newest one (the dimension check still guards it)."""
        wanted = (index.metadata.get("encoder") or {}).get("version")
        for candidate in (autoencoder, previous):
            if candidate is not None and candidate.version == wanted:
                return candidate
        folder = self.model_dir / AUTOENCODER / str(wanted)
        if isinstance(wanted, int) and folder.is_dir():
            return load_autoencoder(folder, self.device)
        if autoencoder is None:
            raise _EncoderNotReadyError
        logger.warning(
            "%s: built with %s version %s, which is not on disk; using version %d",
            index.folder,
            AUTOENCODER,
            wanted,
            autoencoder.version,
        )
        return autoencoder

    def _candidates(self, name: str, loaded: LoadedModel | GalleryIndex | None) -> list[int]:
        """Versions newer than the loaded one and not refused before, newest first."""
        root = self.model_dir / name
        versions = available_versions(root)
        if not versions and loaded is None:
            self.problems[name] = f"no version folder under MODEL_DIR/{name}"
        newer = [v for v in versions if loaded is None or v > loaded.version]
        return [v for v in newer if not self._still_refused(name, v)]

    def _still_refused(self, name: str, version: int) -> bool:
        """Refused before and unchanged on disk since: a folder copied in by hand may have
        been caught half-written, so a changed folder gets another try."""
        stamp = self._refused_stamps.get((name, version))
        return stamp is not None and stamp == _folder_stamp(self.model_dir / name / str(version))

    def _refuse(self, name: str, version: int, error: Exception) -> None:
        """Log the full reason; keep a public one (``/readyz``, ``/models``, 503 details)
        that names files relative to MODEL_DIR and holds no library error text."""
        if isinstance(error, InvalidModelError):
            logger.error("refusing %s version %d: %s", name, version, error)
            reason = self._public(str(error))
        else:
            logger.error("refusing %s version %d", name, version, exc_info=error)
            reason = f"unexpected {type(error).__name__} while loading; see the server log"
        self.refused[name][version] = reason
        self._refused_stamps[(name, version)] = _folder_stamp(self.model_dir / name / str(version))
        self.problems[name] = f"version {version} refused: {reason}"

    def _public(self, text: str) -> str:
        """``text`` with the absolute MODEL_DIR prefix dropped from the paths it names."""
        return text.replace(f"{self.model_dir.resolve()}/", "").replace(f"{self.model_dir}/", "")

    def describe(self) -> dict[str, Any]:
        """For ``/models``: what serves, what is missing and which versions were refused."""
        current = self.current
        return {
            "models": [m.describe() for m in (current.classifier, current.autoencoder) if m],
            "index": current.index.describe() if current.index else None,
            "similar_encoder": _version(current.encoder),
            "missing": self.missing(),
            "refused": {
                name: [{"version": v, "reason": r} for v, r in sorted(versions.items())]
                for name, versions in self.refused.items()
                if versions
            },
        }


def _folder_stamp(folder: Path) -> float:
    """Latest modification time of the folder and its direct entries (0 when unreadable)."""
    try:
        return max(path.stat().st_mtime for path in (folder, *folder.iterdir()))
    except OSError:
        return 0.0


def _version(model: LoadedModel | GalleryIndex | None) -> int | None:
    return None if model is None else model.version
