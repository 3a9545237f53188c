"""Out-of-distribution checks: does an input look like the data a model was trained on?

Training bakes a score into the model's signatures (output ``ood_score``) and stores the
threshold, fitted on validation data, in ``metadata.json`` under ``ood``. Here the score is
only compared with that threshold. Versions exported before this existed have no ``ood``
block: they serve as before, with no scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import InvalidModelError, ServiceError


class OutOfDistributionError(ServiceError):
    """``REJECT_OOD`` is on and an input does not look like the model's training data."""

    status_code = 422


@dataclass(frozen=True)
class OodCheck:
    """The metadata's ``ood`` block, validated."""

    score: str  # which score the model computes (for people; the server only compares it)
    output: str  # the signature output that holds it
    threshold: float
    higher_is_ood: bool
    signatures: frozenset[str]
    in_distribution: str  # what "in distribution" means for this model, in words

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """True where an input looks like the training data."""
        if self.higher_is_ood:
            return scores <= self.threshold
        return scores >= self.threshold

    def ratios(self, scores: np.ndarray) -> np.ndarray:
        """Scores on the threshold's scale, oriented so that above 1 means flagged: one
        histogram serves every model whatever its score's units."""
        threshold = self.threshold if self.threshold != 0 else 1e-12
        ratio = scores / threshold
        return ratio if self.higher_is_ood else 1 / np.maximum(ratio, 1e-12)


def read_ood_check(metadata: dict[str, Any], folder: Path) -> OodCheck | None:
    """``None`` when the version has no ``ood`` block; a malformed block refuses the version."""
    block = metadata.get("ood")
    if block is None:
        return None
    if not isinstance(block, dict):
        raise InvalidModelError(f"{folder}: metadata 'ood' must be an object")
    threshold = block.get("threshold")
    output = block.get("output")
    signatures = block.get("signatures")
    if not (isinstance(threshold, int | float) and math.isfinite(threshold)):
        raise InvalidModelError(f"{folder}: metadata ood.threshold must be a finite number")
    if not (isinstance(output, str) and output):
        raise InvalidModelError(f"{folder}: metadata ood.output must name a signature output")
    if not (isinstance(signatures, list) and all(isinstance(s, str) for s in signatures)):
        raise InvalidModelError(f"{folder}: metadata ood.signatures must be a list of names")
    return OodCheck(
        score=str(block.get("score", "unnamed")),
        output=output,
        threshold=float(threshold),
        higher_is_ood=bool(block.get("higher_is_ood", True)),
        signatures=frozenset(signatures),
        in_distribution=str(block.get("in_distribution", "the training data")),
    )


def refuse_flagged(check: OodCheck, names: list[str], scores: np.ndarray) -> None:
    """Raise the 422 that ``REJECT_OOD`` asks for when any input is flagged."""
    flagged = [name for name, ok in zip(names, check.flags(scores), strict=True) if not ok]
    if flagged:
        raise OutOfDistributionError(
            f"{', '.join(flagged)}: does not look like {check.in_distribution}"
            f" (out-of-distribution score above {check.threshold:.4g})"
        )
