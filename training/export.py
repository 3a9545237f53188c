"""Versioned, atomic export in TF Serving's layout: ``<out>/<model_name>/<version>/``.

A version folder is first written under a hidden temporary name and renamed into place
only when complete, so a crash never leaves a half-written version a server could load.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

METADATA_FILE = "metadata.json"


def existing_versions(model_root: Path) -> list[int]:
    """Numeric version folders under ``model_root`` (hidden temporary folders excluded)."""
    if not model_root.is_dir():
        return []
    return sorted(int(p.name) for p in model_root.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_root: Path) -> int:
    versions = existing_versions(model_root)
    return versions[-1] + 1 if versions else 1


def write_version(
    out_dir: Path,
    model_name: str,
    write_payload: Callable[[Path], None],
    metadata: dict[str, Any],
) -> Path:
    """Write a new version of ``model_name`` and return its final folder.

    ``write_payload(tmp_dir)`` writes the model files (SavedModel, index, reports) into
    a fresh temporary folder; ``metadata.json`` is added last, then the folder is renamed.
    """
    model_root = Path(out_dir) / model_name
    model_root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_tmp_dirs(model_root)
    version = next_version(model_root)
    tmp_dir = model_root / f".tmp-{version}-{os.getpid()}"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir()
    try:
        write_payload(tmp_dir)
        full_metadata = {
            "name": model_name,
            "version": version,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "tensorflow_version": tf.__version__,
            **metadata,
        }
        (tmp_dir / METADATA_FILE).write_text(json.dumps(full_metadata, indent=2, default=_jsonable))
        final_dir = model_root / str(version)
        os.rename(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return final_dir


def _remove_abandoned_tmp_dirs(model_root: Path) -> None:
    """Delete ``.tmp-<version>-<pid>`` folders left by a writer that died (its pid is gone)."""
    for tmp_dir in model_root.glob(".tmp-*-*"):
        pid = tmp_dir.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _jsonable(value: Any) -> Any:
    """Let numpy scalars and arrays pass through ``json.dumps``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
