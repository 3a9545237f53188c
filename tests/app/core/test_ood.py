"""The metadata's ``ood`` block: validation, flags, ratios, and a version that breaks it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.core.errors import InvalidModelError
from app.core.ood import OodCheck, OutOfDistributionError, read_ood_check, refuse_flagged
from app.core.runtime import load_classifier, read_metadata, split_scores
from contract.metadata import ClassifierMetadata, OodSpec, validate

BLOCK = {
    "score": "feature_mahalanobis",
    "output": "ood_score",
    "signatures": ["serving_default"],
    "higher_is_ood": True,
    "threshold": 10.0,
    "in_distribution": "hands",
}
CLASSIFIER_FIELDS = {
    "name": "signs_classifier",
    "version": 1,
    "input": {"height": 64, "width": 64},
    "class_names": ["0", "1"],
}


def check(**change: object) -> OodCheck:
    return OodCheck(OodSpec.model_validate({**BLOCK, **change}))


def test_no_block_means_no_check() -> None:
    metadata = validate(CLASSIFIER_FIELDS, "m/1")
    assert isinstance(metadata, ClassifierMetadata)
    assert read_ood_check(metadata) is None
    scored = read_ood_check(validate({**CLASSIFIER_FIELDS, "ood": BLOCK}, "m/1"))
    assert scored is not None and scored.scores("serving_default") and not scored.scores("x")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"threshold": "high"}, "ood.threshold"),
        ({"threshold": float("nan")}, "ood.threshold"),
        ({"output": ""}, "ood.output"),
        ({"signatures": "serving_default"}, "ood.signatures"),
    ],
)
def test_a_malformed_block_refuses_the_version(tmp_path: Path, change: dict, named: str) -> None:
    folder = tmp_path / "signs_classifier" / "1"
    folder.mkdir(parents=True)
    fields = {**CLASSIFIER_FIELDS, "ood": {**BLOCK, **change}}
    (folder / "metadata.json").write_text(json.dumps(fields))
    with pytest.raises(InvalidModelError, match=f"does not fit the contract: {named}"):
        read_metadata(folder)


def test_flags_and_ratios_follow_the_threshold_and_its_direction() -> None:
    scores = np.array([5.0, 10.0, 20.0])
    higher = check()
    assert higher.flags(scores).tolist() == [True, True, False]
    np.testing.assert_allclose(higher.ratios(scores), [0.5, 1.0, 2.0])
    lower = check(higher_is_ood=False)
    assert lower.flags(scores).tolist() == [False, True, True]
    np.testing.assert_allclose(lower.ratios(scores), [2.0, 1.0, 0.5])


def test_refuse_flagged_names_only_the_flagged_inputs() -> None:
    hands = check()
    refuse_flagged(hands, ["a.png"], np.array([1.0]))  # nothing flagged: no error
    with pytest.raises(OutOfDistributionError, match=r"^b\.png: does not look like hands") as error:
        refuse_flagged(hands, ["a.png", "b.png"], np.array([1.0, 11.0]))
    assert error.value.status_code == 422


def test_plain_rows_have_no_scores() -> None:
    rows = np.zeros((2, 6), np.float32)
    outputs, scores = split_scores(rows)
    assert outputs is rows and scores is None


def test_a_version_promising_a_missing_score_output_is_refused(
    quick_models: Path, tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "signs_classifier" / "1"
    shutil.copytree(quick_models / "signs_classifier" / "1", folder)
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["ood"]["output"] = "no_such_output"
    (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(InvalidModelError, match="no_such_output"):
        load_classifier(folder, "/CPU:0")


def test_a_scored_version_yields_outputs_and_one_score_per_image(quick_models: Path) -> None:
    model = load_classifier(quick_models / "signs_classifier" / "1", "/CPU:0")
    assert model.scores("serving_default")
    rows = model.inference_caller("serving_default")(np.zeros((3, 64, 64, 3), np.float32))
    outputs, scores = split_scores(rows)
    assert outputs.shape == (3, 6) and scores is not None and scores.shape == (3,)
    np.testing.assert_allclose(outputs, model.run("serving_default", np.zeros((3, 64, 64, 3))))
