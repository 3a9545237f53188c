"""The metadata's ``ood`` block: validation, flags, ratios, and a version that breaks it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.core.errors import InvalidModelError
from app.core.ood import OodCheck, OutOfDistributionError, read_ood_check, refuse_flagged
from app.core.runtime import load_classifier, split_scores

BLOCK = {
    "score": "feature_mahalanobis",
    "output": "ood_score",
    "signatures": ["serving_default"],
    "higher_is_ood": True,
    "threshold": 10.0,
    "in_distribution": "hands",
}


def test_no_block_means_no_check() -> None:
    assert read_ood_check({}, Path("m/1")) is None


@pytest.mark.parametrize(
    "change",
    [
        {"threshold": "high"},
        {"threshold": float("nan")},
        {"output": ""},
        {"signatures": "serving_default"},
    ],
)
def test_a_malformed_block_refuses_the_version(change: dict) -> None:
    with pytest.raises(InvalidModelError, match="metadata ood"):
        read_ood_check({"ood": {**BLOCK, **change}}, Path("m/1"))


def test_flags_and_ratios_follow_the_threshold_and_its_direction() -> None:
    check = read_ood_check({"ood": BLOCK}, Path("m/1"))
    assert isinstance(check, OodCheck)
    scores = np.array([5.0, 10.0, 20.0])
    assert check.flags(scores).tolist() == [True, True, False]
    np.testing.assert_allclose(check.ratios(scores), [0.5, 1.0, 2.0])
    lower = read_ood_check({"ood": {**BLOCK, "higher_is_ood": False}}, Path("m/1"))
    assert lower is not None
    assert lower.flags(scores).tolist() == [False, True, True]
    np.testing.assert_allclose(lower.ratios(scores), [2.0, 1.0, 0.5])


def test_refuse_flagged_names_only_the_flagged_inputs() -> None:
    check = read_ood_check({"ood": BLOCK}, Path("m/1"))
    assert check is not None
    refuse_flagged(check, ["a.png"], np.array([1.0]))  # nothing flagged: no error
    with pytest.raises(OutOfDistributionError, match=r"^b\.png: does not look like hands") as error:
        refuse_flagged(check, ["a.png", "b.png"], np.array([1.0, 11.0]))
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
