"""What every inference route does with a model's out-of-distribution scores: count them for
drift watching, refuse flagged inputs when ``REJECT_OOD`` is on, and say per input whether
it looks like the training data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.api.deps import ServiceState
from app.core.ood import refuse_flagged
from app.core.runtime import LoadedModel, split_scores


@dataclass(frozen=True)
class Verdict:
    """The optional response fields for one input."""

    ood_score: float | None = None
    in_distribution: bool | None = None


def assess(
    service: ServiceState, model: LoadedModel, names: list[str], rows: np.ndarray
) -> tuple[np.ndarray, list[Verdict]]:
    """Split an ``inference_caller``'s rows into the outputs and one verdict per input
    (empty verdicts for a version without a score)."""
    outputs, scores = split_scores(rows)
    if scores is None or model.ood is None:
        return outputs, [Verdict() for _ in names]
    service.metrics.observe_ood(model.name, model.ood.ratios(scores))
    if service.settings.reject_ood:
        refuse_flagged(model.ood, names, scores)
    flags = model.ood.flags(scores)
    return outputs, [
        Verdict(float(score), bool(flag)) for score, flag in zip(scores, flags, strict=True)
    ]
