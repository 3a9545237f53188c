"""Which model versions serve: version discovery, validation, labels and atomic hot swaps.

Each model keeps its newest ``versions_kept`` valid versions loaded, plus any version a label
names. Requests read ``registry.current`` (an immutable ``ModelSet``) once, so a swap never
changes the models under a request in flight; ``ModelSet.select`` picks the version a request
uses (a pinned version or label, else the canary share, else the default). A version that
fails validation is remembered as refused, logged once, and the others keep serving.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.core.errors import ConflictError, InvalidModelError, NotFoundError
from app.core.index import GalleryIndex, check_matches_encoder, load_index
from app.core.labels import (
    CANARY,
    STABLE,
    Labels,
    check_label,
    check_share,
    read_labels,
    write_labels,
)
from app.core.runtime import LoadedModel, load_autoencoder, load_classifier, settle_heap
from contract import layout
from contract.layout import AUTOENCODER, CLASSIFIER, INDEX
from contract.metadata import AutoencoderMetadata, ClassifierMetadata, IndexMetadata
from contract.training_status import read_status, training_message

logger = logging.getLogger(__name__)

COMPONENTS = (CLASSIFIER, AUTOENCODER, INDEX)

Servable = LoadedModel | GalleryIndex
FolderStamp = tuple[tuple[str, int, int, int], ...]
# Entries a refused version's folder is stamped by, at most (see ``_folder_stamp``).
STAMP_MAX_ENTRIES = 256


@dataclass(frozen=True)
class ModelVersions:
    """One model's loaded versions (newest first) and its labels."""

    loaded: Mapping[int, Servable] = field(default_factory=dict)
    labels: Labels = field(default_factory=Labels)

    @property
    def default(self) -> Servable | None:
        """What unpinned requests get: the ``stable`` version when loaded, else the newest."""
        stable = self.labels.versions.get(STABLE)
        if stable is not None and stable in self.loaded:
            return self.loaded[stable]
        return next(iter(self.loaded.values()), None)

    def select(
        self, name: str, version: int | None, label: str | None, draw: float
    ) -> Servable | None:
        """The version a request uses; None when nothing is loaded. ``draw`` in [0, 1)
        decides the canary: an unpinned request goes to it when ``draw < canary_share``."""
        if label is not None:
            if label not in self.labels.versions:
                raise NotFoundError(f"{name} has no label {label!r}")
            version = self.labels.versions[label]
        if version is not None:
            if version not in self.loaded:
                loaded = ", ".join(map(str, self.loaded)) or "none"
                raise NotFoundError(f"{name} version {version} is not loaded (loaded: {loaded})")
            return self.loaded[version]
        canary = self.labels.versions.get(CANARY)
        if canary is not None and canary in self.loaded and draw < self.labels.canary_share:
            return self.loaded[canary]
        return self.default

    def describe(self) -> dict[str, Any]:
        default = self.default
        return {
            "loaded": list(self.loaded),
            "default": None if default is None else default.version,
            "labels": dict(sorted(self.labels.versions.items())),
            "canary_share": self.labels.canary_share,
        }


@dataclass(frozen=True)
class ModelSet:
    """Everything one request may use. ``classifier``, ``autoencoder`` and ``index`` are the
    default versions; ``encoder`` is the autoencoder version the default index was built with
    (its codes live in the same space), which may be older than ``autoencoder``.
    ``encoders`` maps every loaded index version to its encoder."""

    classifier: LoadedModel[ClassifierMetadata] | None = None
    autoencoder: LoadedModel[AutoencoderMetadata] | None = None
    index: GalleryIndex | None = None
    encoder: LoadedModel[AutoencoderMetadata] | None = None
    versions: Mapping[str, ModelVersions] = field(default_factory=dict)
    encoders: Mapping[int, LoadedModel[AutoencoderMetadata]] = field(default_factory=dict)

    def select(
        self,
        name: str,
        version: int | None = None,
        label: str | None = None,
        draw: Callable[[], float] = random.random,
    ) -> Any:
        """The version of ``name`` a request uses (see ``ModelVersions.select``); None when
        none is loaded. Raises ``NotFoundError`` (404) for a pin that is not loaded."""
        return self.versions.get(name, ModelVersions()).select(name, version, label, draw())


class _EncoderNotReadyError(Exception):
    """The index cannot be checked yet because no autoencoder is loaded."""


class ModelRegistry:
    """Owns what is loaded; every change happens under one lock and ends in one swap of
    ``current``. The blocking methods (TensorFlow loads) belong in a worker thread."""

    def __init__(
        self,
        model_dir: Path,
        device: str,
        on_change: Callable[[ModelSet], None] | None = None,
        versions_kept: int = 1,
    ) -> None:
        if versions_kept < 1:
            raise ValueError(f"versions_kept must be at least 1, got {versions_kept}")
        self.model_dir = Path(model_dir)
        self.device = device
        self.versions_kept = versions_kept
        self.current = ModelSet()
        self.problems: dict[str, str] = {}  # component -> why it is not loaded
        self.refused: dict[str, dict[int, str]] = {name: {} for name in COMPONENTS}
        self.label_problems: dict[str, str] = {}  # component -> why its labels file is ignored
        self._refused_stamps: dict[tuple[str, int], FolderStamp] = {}
        self._loaded: dict[str, dict[int, Servable]] = {name: {} for name in COMPONENTS}
        # index version -> its encoder
        self._encoders: dict[int, LoadedModel[AutoencoderMetadata]] = {}
        self._labels: dict[str, Labels] = {name: Labels() for name in COMPONENTS}
        self._file_labels: dict[str, Labels | None] = {name: None for name in COMPONENTS}
        self._on_change = on_change
        self._lock = threading.Lock()

    def training_status(self) -> dict[str, Any] | None:
        """What a training run writing into the models folder last said (None: no run)."""
        return read_status(self.model_dir)

    def missing(self) -> dict[str, str]:
        """Components that cannot serve, with the reason; empty when ready. A model that a
        training run beside the server has yet to export says so (epoch, time left)."""
        unloaded = [
            name
            for name in COMPONENTS
            if not self.current.versions.get(name, ModelVersions()).loaded
        ]
        status = self.training_status() if unloaded else None
        return {
            name: training_message(status, name) or self.problems.get(name, "not loaded yet")
            for name in unloaded
        }

    def missing_reason(self, name: str) -> str:
        """One line for a 503: why ``name`` cannot serve."""
        return f"{name} is not loaded: {self.missing().get(name, 'not loaded yet')}"

    def readiness(self) -> dict[str, dict[str, Any]]:
        """Per model: ready or not, the default version, the loaded ones and the reason."""
        missing = self.missing()
        states = {}
        for name in COMPONENTS:
            versions = self.current.versions.get(name, ModelVersions())
            default = versions.default
            states[name] = {
                "ready": name not in missing,
                "version": None if default is None else default.version,
                "loaded": list(versions.loaded),
                "reason": missing.get(name),
            }
        return states

    def reload(self) -> list[str]:
        """Load any newer valid version (and labelled ones), drop versions no longer kept,
        and swap; returns what changed (for logs/API)."""
        with self._lock:
            for name in COMPONENTS:
                self._sync_labels_file(name)
                self._plan(name)
            return self._publish()

    def set_label(
        self, name: str, label: str, version: int, canary_share: float | None = None
    ) -> bool:
        """Point ``label`` at ``version`` (loading it when it is on disk but not loaded).

        Returns whether the labels file was written (False: the folder is read-only and the
        label lives in memory until restart). Raises 404 for a version that cannot load.
        """
        _check_component(name)
        try:
            check_label(label)
            if canary_share is not None:
                if label != CANARY:
                    raise ValueError("canary_share can only be set with the 'canary' label")
                check_share(canary_share)
        except ValueError as error:
            raise ConflictError(str(error)) from error
        with self._lock:
            previous = self._labels[name]
            share = previous.canary_share if canary_share is None else canary_share
            self._labels[name] = Labels({**previous.versions, label: version}, share)
            self._plan(name)
            if version not in self._loaded[name]:
                self._labels[name] = previous
                self._plan(name)
                why = self.refused[name].get(version, "no such version folder")
                raise NotFoundError(f"{name} version {version} cannot be loaded: {why}")
            return self._commit_labels(name)

    def remove_label(self, name: str, label: str) -> bool:
        """Drop ``label``; a version kept only for it is unloaded. Returns as ``set_label``."""
        _check_component(name)
        with self._lock:
            labels = self._labels[name]
            if label not in labels.versions:
                raise NotFoundError(f"{name} has no label {label!r}")
            versions = {key: value for key, value in labels.versions.items() if key != label}
            self._labels[name] = replace(labels, versions=versions)
            self._plan(name)
            return self._commit_labels(name)

    def rollback(self, name: str) -> tuple[int, int, bool]:
        """Serve the loaded version just below the default one, and keep serving it: the
        ``stable`` label is set to it (so a poll does not promote the newer one again) and
        any canary is removed. Returns ``(from, to, persisted)``."""
        _check_component(name)
        with self._lock:
            versions = self.current.versions.get(name, ModelVersions())
            default = versions.default
            if default is None:
                raise ConflictError(f"{name} has no version loaded")
            older = [version for version in versions.loaded if version < default.version]
            if not older:
                raise ConflictError(
                    f"{name}: no version older than {default.version} is loaded to roll back to"
                )
            labels = {
                key: value for key, value in self._labels[name].versions.items() if key != CANARY
            }
            self._labels[name] = Labels({**labels, STABLE: older[0]}, 0.0)
            self._plan(name)
            persisted = self._commit_labels(name)
            logger.warning("%s rolled back from version %d to %d", name, default.version, older[0])
            return default.version, older[0], persisted

    def _commit_labels(self, name: str) -> bool:
        persisted = write_labels(self.model_dir / name, self._labels[name])
        if persisted:
            self._file_labels[name] = self._labels[name]
        else:
            logger.warning("%s: cannot write %s; labels kept in memory", name, self.model_dir)
        self._publish()
        return persisted

    def _sync_labels_file(self, name: str) -> None:
        """Apply the labels file when it changed since last read or written (an edit by
        hand); a flawed file is ignored, named in /models, and the labels in use stay."""
        try:
            on_disk = read_labels(self.model_dir / name)
        except InvalidModelError as error:
            reason = self._public(error.detail)
            if self.label_problems.get(name) != reason:
                logger.error("ignoring labels: %s", error.detail)
            self.label_problems[name] = reason
            return
        self.label_problems.pop(name, None)
        if on_disk != self._file_labels[name]:
            self._file_labels[name] = on_disk
            self._labels[name] = on_disk or Labels()

    def _plan(self, name: str) -> None:
        """Bring ``name``'s loaded versions to: the newest ``versions_kept`` valid ones plus
        every labelled one. Versions still loaded but gone from disk stay (nothing drops a
        serving model behind an operator's back)."""
        root = self.model_dir / name
        loaded = self._loaded[name]
        labelled = set(self._labels[name].versions.values())
        candidates = sorted(set(layout.versions(root)) | set(loaded), reverse=True)
        if not candidates:
            self.problems[name] = f"no version folder under MODEL_DIR/{name}"
        kept: dict[int, Servable] = {}
        for version in candidates:
            if len(kept) >= self.versions_kept and version not in labelled:
                continue
            if version in loaded:
                kept[version] = loaded[version]
                continue
            if self._still_refused(name, version):
                continue
            # Taken before the load: a copy that completes while the load fails is retried.
            stamp = _folder_stamp(root / str(version))
            try:
                kept[version] = self._load(name, version)
            except _EncoderNotReadyError:
                self.problems[INDEX] = f"waits for {AUTOENCODER}, which is not loaded"
                break
            except Exception as error:  # any failure refuses the version, never the server
                self._refuse(name, version, error, stamp)
                continue
            self.refused[name].pop(version, None)
        if kept:
            self.problems.pop(name, None)
        self._loaded[name] = kept
        if name == INDEX:
            self._encoders = {version: self._encoders[version] for version in kept}

    def _load(self, name: str, version: int) -> Servable:
        folder = self.model_dir / name / str(version)
        if name == CLASSIFIER:
            return load_classifier(folder, self.device)
        if name == AUTOENCODER:
            return load_autoencoder(folder, self.device)
        index = load_index(folder)
        encoder = self._encoder_for(index)
        label = f"{AUTOENCODER} version {encoder.version}"
        check_matches_encoder(index, encoder.metadata.code_dim, label)
        self._encoders[version] = encoder
        return index

    def _encoder_for(self, index: GalleryIndex) -> LoadedModel[AutoencoderMetadata]:
        """The autoencoder version named in the index metadata, loaded if it is on disk;
        otherwise the newest one (the dimension check still guards it)."""
        # GalleryIndex keeps its metadata as the dict of its fields (checked when loaded)
        encoder = IndexMetadata.model_validate(index.metadata).encoder
        wanted = None if encoder is None else encoder.version
        autoencoders = self._loaded[AUTOENCODER]
        for candidate in (*autoencoders.values(), *self._encoders.values()):
            if isinstance(candidate, LoadedModel) and candidate.version == wanted:
                return candidate
        folder = self.model_dir / AUTOENCODER / str(wanted)
        if isinstance(wanted, int) and folder.is_dir():
            return load_autoencoder(folder, self.device)
        newest = next(iter(autoencoders.values()), None)
        if not isinstance(newest, LoadedModel):
            raise _EncoderNotReadyError
        logger.warning(
            "%s: built with %s version %s, which is not on disk; using version %d",
            index.folder,
            AUTOENCODER,
            wanted,
            newest.version,
        )
        return newest

    def _publish(self) -> list[str]:
        """Swap in a new ``ModelSet`` when anything changed; returns the changes."""
        old = self.current
        versions = {
            name: ModelVersions(dict(self._loaded[name]), self._labels[name]) for name in COMPONENTS
        }
        index = versions[INDEX].default
        new = ModelSet(
            classifier=versions[CLASSIFIER].default,  # type: ignore[arg-type]
            autoencoder=versions[AUTOENCODER].default,  # type: ignore[arg-type]
            index=index,  # type: ignore[arg-type]
            encoder=None if index is None else self._encoders[index.version],
            versions=versions,
            encoders=dict(self._encoders),
        )
        changes = [
            change
            for name in COMPONENTS
            for change in _changes(name, old.versions.get(name, ModelVersions()), versions[name])
        ]
        before, after = _identity(old), _identity(new)
        if after != before:
            self.current = new  # one reference assignment: the swap is atomic
            if changes:
                logger.info("models now serving: %s", ", ".join(changes))
            if self._on_change is not None:
                self._on_change(new)
            del old  # in-flight requests may still hold it; otherwise it is reclaimed now
            if _loaded_models(after) != _loaded_models(before):
                settle_heap()  # a label change alone loads and frees no model: no collection
        return changes

    def _still_refused(self, name: str, version: int) -> bool:
        """Refused before and unchanged on disk since: a folder copied in by hand may have
        been caught half-written, so a change to any file under it gets another try."""
        stamp = self._refused_stamps.get((name, version))
        return stamp is not None and stamp == _folder_stamp(self.model_dir / name / str(version))

    def _refuse(self, name: str, version: int, error: Exception, stamp: FolderStamp) -> None:
        """Log the full reason; keep a public one (``/readyz``, ``/models``, 503 details)
        that names files relative to MODEL_DIR and holds no library error text."""
        if isinstance(error, InvalidModelError):
            logger.error("refusing %s version %d: %s", name, version, error)
            reason = self._public(str(error))
        else:
            logger.error("refusing %s version %d", name, version, exc_info=error)
            reason = f"unexpected {type(error).__name__} while loading; see the server log"
        self.refused[name][version] = reason
        self._refused_stamps[(name, version)] = stamp
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
            "versions": {
                name: {
                    **current.versions.get(name, ModelVersions()).describe(),
                    "labels_problem": self.label_problems.get(name),
                }
                for name in COMPONENTS
            },
        }


def _check_component(name: str) -> None:
    if name not in COMPONENTS:
        raise NotFoundError(f"unknown model {name!r}; models: {', '.join(COMPONENTS)}")


def _changes(name: str, before: ModelVersions, after: ModelVersions) -> list[str]:
    """``name 1 -> 2`` when the default version changed, ``name +3`` / ``name -1`` for
    other versions loaded or unloaded."""
    old_default, new_default = _version(before.default), _version(after.default)
    changes = [f"{name} {old_default} -> {new_default}"] if old_default != new_default else []
    quiet = {old_default, new_default}
    changes += [f"{name} +{v}" for v in after.loaded if v not in before.loaded and v not in quiet]
    changes += [f"{name} -{v}" for v in before.loaded if v not in after.loaded and v not in quiet]
    return changes


def _identity(models: ModelSet) -> dict[str, Any]:
    """What tells two sets apart: which objects are loaded (models compare by identity;
    their dataclass equality would compare arrays) and the labels."""
    return {
        name: ([(v, id(m)) for v, m in versions.loaded.items()], versions.labels)
        for name, versions in models.versions.items()
    }


def _loaded_models(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of an ``_identity`` that names the loaded model objects (not the labels)."""
    return {name: loaded for name, (loaded, _) in identity.items()}


def _folder_stamp(folder: Path) -> FolderStamp:
    """What tells a version folder's states apart: the path, size, modification time and
    inode of the folder and of everything under it (sub-folders such as ``variables/``
    included; a file replaced by a rename gets a new inode); what cannot be read counts
    with size -1.

    The walk looks at ``STAMP_MAX_ENTRIES`` entries at most, so a folder stuffed with files
    cannot make every reload slow: a SavedModel has a dozen, and a folder with more is
    judged on the first ones met (a change among the rest goes unnoticed, so a refused one
    stays refused until one of those, or a folder's own entries, change). Symbolic links to
    folders are not followed.
    """
    entries: list[tuple[str, int, int, int]] = []
    folders = [(folder, "")]
    while folders and len(entries) < STAMP_MAX_ENTRIES:
        path, relative = folders.pop()
        try:
            stat = path.stat()
            entries.append((relative, stat.st_size, stat.st_mtime_ns, stat.st_ino))
            with os.scandir(path) as listing:
                for entry in listing:
                    if len(entries) + len(folders) >= STAMP_MAX_ENTRIES:
                        break
                    name = f"{relative}/{entry.name}"
                    if entry.is_dir(follow_symlinks=False):
                        folders.append((Path(entry.path), name))
                        continue
                    try:
                        stat = entry.stat()
                    except OSError:  # a dangling link, or gone meanwhile
                        entries.append((name, -1, 0, 0))
                        continue
                    entries.append((name, stat.st_size, stat.st_mtime_ns, stat.st_ino))
        except OSError:
            entries.append((relative, -1, 0, 0))
    return tuple(entries)


def _version(model: Servable | None) -> int | None:
    return None if model is None else model.version
