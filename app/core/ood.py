"""Out-of-distribution checks: does an input look like the data a model was trained on?

Training bakes a score into the model's signatures (output ``contract.signatures.OOD_SCORE``)
and stores the threshold, fitted on validation data, in the version's metadata: its ``ood``
block, ``contract.metadata.OodSpec``, validated as the version is read (a malformed block
refuses the version). Here the score is only compared with that threshold. Versions exported
before this existed have no ``ood`` block: they serve as before, with no scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.core.errors import ServiceError
from contract.metadata import OodSpec, SavedModelMetadata


class OutOfDistributionError(ServiceError):
    """``REJECT_OOD`` is on and an input does not look like the model's training data."""

    status_code = 422


@dataclass(frozen=True)
class OodCheck:
    """A version's ``ood`` block as the server applies it to the scores its signatures give."""

    spec: OodSpec

    @property
    def output(self) -> str:
        """The signature output that holds the score."""
        return self.spec.output

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    def scores(self, signature: str) -> bool:
        """Whether ``signature`` outputs the score."""
        return signature in self.spec.signatures

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """True where an input looks like the training data."""
        if self.spec.higher_is_ood:
            return scores <= self.threshold
        return scores >= self.threshold

    def ratios(self, scores: np.ndarray) -> np.ndarray:
        """Scores on the threshold's scale, oriented so that above 1 means flagged: one
        histogram serves every model whatever its score's units."""
        threshold = self.threshold if self.threshold != 0 else 1e-12
        ratio = scores / threshold
        return ratio if self.spec.higher_is_ood else 1 / np.maximum(ratio, 1e-12)


def read_ood_check(metadata: SavedModelMetadata) -> OodCheck | None:
    """The version's check; ``None`` when its metadata has no ``ood`` block."""
    return None if metadata.ood is None else OodCheck(metadata.ood)


def refuse_flagged(check: OodCheck, names: list[str], scores: np.ndarray) -> None:
    """Raise the 422 that ``REJECT_OOD`` asks for when any input is flagged."""
    flagged = [name for name, ok in zip(names, check.flags(scores), strict=True) if not ok]
    if flagged:
        raise OutOfDistributionError(
            f"{', '.join(flagged)}: does not look like {check.spec.in_distribution}"
            f" (out-of-distribution score above {check.threshold:.4g})"
        )
