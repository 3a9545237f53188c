"""Versioned, atomic export in TF Serving's layout: ``<out>/<model_name>/<version>/``.

A version folder is first written under a hidden temporary name and renamed into place
only when complete, so a crash never leaves a half-written version a server could load.
Its ``metadata.json`` is built and validated through ``contract.metadata``, the schema the
server reads it with.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from contract.layout import METADATA_FILE, versions
from contract.metadata import VersionFields, VersionStamp, stamped, to_json
from contract.signatures import INPUT


def images_spec(image_size: int) -> tf.TensorSpec:
    """Every exported signature's one input: a batch of square float32 RGB images."""
    return tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=INPUT)


def next_version(model_root: Path) -> int:
    versions_now = versions(model_root)
    return versions_now[-1] + 1 if versions_now else 1


def write_version(
    out_dir: Path,
    model_name: str,
    write_payload: Callable[[Path], None],
    fields: VersionFields | dict[str, Any],
) -> Path:
    """Write a new version of ``model_name`` and return its final folder.

    ``write_payload(tmp_dir)`` writes the model files (SavedModel, index, reports) into
    a fresh temporary folder; ``metadata.json`` is added last, then the folder is renamed.
    ``fields`` are the model's own (its ``contract.metadata`` ``*Fields``); the stamp (name,
    version, time, TensorFlow version, commit) is added here, and the whole is checked
    against the model's schema before any file is written.
    """
    model_root = Path(out_dir) / model_name
    model_root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_tmp_dirs(model_root)
    version = next_version(model_root)
    stamp = VersionStamp(
        name=model_name,
        version=version,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        tensorflow_version=tf.__version__,
        commit=source_commit(),
    )
    checked = stamped(stamp, fields, f"{model_root}/{version}")
    tmp_dir = model_root / f".tmp-{version}-{os.getpid()}"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir()
    try:
        write_payload(tmp_dir)
        (tmp_dir / METADATA_FILE).write_text(to_json(checked))
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


def source_commit() -> str | None:
    """The git commit of the training code, or None outside a git checkout (e.g. an image)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None
