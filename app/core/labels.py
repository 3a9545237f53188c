"""Version labels (TF Serving style): names such as ``stable`` and ``canary`` for versions.

``stable`` is the version that requests without a pin get; ``canary`` (with ``canary_share``
in [0, 1]) takes that share of them. Any other label is only an alias a client may pin with
``?label=``. The labels of a model live in ``models/<name>/labels.json``, which an operator may
edit by hand and which the admin endpoints rewrite, e.g.::

    {"labels": {"stable": 3, "canary": 4}, "canary_share": 0.1}
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import InvalidModelError

LABELS_FILE = "labels.json"
STABLE = "stable"
CANARY = "canary"
LABEL_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


@dataclass(frozen=True)
class Labels:
    """One model's labels; ``canary_share`` only counts while a ``canary`` label exists."""

    versions: dict[str, int] = field(default_factory=dict)
    canary_share: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"labels": dict(sorted(self.versions.items())), "canary_share": self.canary_share}


def check_label(label: str) -> None:
    if not re.fullmatch(LABEL_PATTERN, label):
        raise ValueError(
            f"label {label!r}: use 1-32 lower-case letters, digits, '-' or '_', "
            "starting with a letter"
        )


def check_share(share: float) -> None:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"canary_share must be between 0 and 1, got {share}")


def parse_labels(document: object, origin: str) -> Labels:
    """Validate a labels document (the file's content); any flaw refuses the whole file."""
    try:
        if not isinstance(document, dict) or set(document) - {"labels", "canary_share"}:
            raise ValueError('expected {"labels": {...}, "canary_share": 0.1}')
        versions = document.get("labels", {})
        if not isinstance(versions, dict):
            raise ValueError('"labels" must map a label to a version number')
        for label, version in versions.items():
            check_label(label)
            if not (isinstance(version, int) and not isinstance(version, bool) and version > 0):
                raise ValueError(f"label {label!r}: version must be a positive integer")
        share = document.get("canary_share", 0.0)
        if not isinstance(share, int | float) or isinstance(share, bool):
            raise ValueError("canary_share must be a number")
        check_share(float(share))
    except ValueError as error:
        raise InvalidModelError(f"{origin}: {error}") from error
    return Labels(dict(versions), float(share))


def read_labels(model_root: Path) -> Labels | None:
    """The labels file of one model, or None when there is none."""
    path = model_root / LABELS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise InvalidModelError(f"{path}: unreadable: {error}") from error
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InvalidModelError(f"{path}: not JSON: {error}") from error
    return parse_labels(document, str(path))


def write_labels(model_root: Path, labels: Labels) -> bool:
    """Replace the labels file atomically; False when the folder is read-only (say a volume
    mounted read-only), in which case the labels only live in the server's memory."""
    try:
        model_root.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".labels-", dir=model_root)
        with os.fdopen(handle, "w") as file:
            json.dump(labels.to_json(), file, indent=2)
        os.replace(temporary, model_root / LABELS_FILE)
    except OSError:
        return False
    return True
