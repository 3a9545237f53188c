"""metadata.json: the files training writes fit the schema, and bad ones are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.layout import AUTOENCODER, CLASSIFIER, INDEX, METADATA_FILE
from contract.metadata import (
    AutoencoderMetadata,
    CalibrationSpec,
    ClassifierFields,
    ClassifierMetadata,
    IndexMetadata,
    InitFromSpec,
    InputSpec,
    MetadataError,
    OodFigures,
    OodSpec,
    VersionMetadata,
    VersionStamp,
    read_metadata,
    stamped,
    to_json,
    validate,
)

CLASSIFIER_FIELDS = {
    "name": CLASSIFIER,
    "version": 1,
    "input": {"height": 64, "width": 64, "channels": 3, "dtype": "float32", "scale": "pixel / 255"},
    "class_names": ["0", "1"],
}


def write(folder: Path, fields: object) -> Path:
    folder.mkdir(parents=True)
    (folder / METADATA_FILE).write_text(json.dumps(fields))
    return folder


@pytest.mark.parametrize(
    ("name", "schema"),
    [(CLASSIFIER, ClassifierMetadata), (AUTOENCODER, AutoencoderMetadata), (INDEX, IndexMetadata)],
)
def test_trained_versions_fit_their_schema_and_lose_no_field(
    quick_models: Path, name: str, schema: type
) -> None:
    folder = quick_models / name / "1"
    metadata = read_metadata(folder)
    assert type(metadata) is schema
    on_disk = json.loads((folder / METADATA_FILE).read_text())
    rewritten = json.loads(to_json(metadata))
    assert {key: rewritten[key] for key in on_disk} == on_disk  # extra fields survive


def test_unknown_fields_are_kept_for_later_readers() -> None:
    metadata = validate({**CLASSIFIER_FIELDS, "temperature": 1.5}, "here")
    assert metadata.model_dump()["temperature"] == 1.5


def test_a_model_without_its_own_schema_needs_only_the_common_fields() -> None:
    assert type(validate({"name": "other", "version": 3}, "here")) is VersionMetadata


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"class_names": []}, "class_names"),
        ({"class_names": "abc"}, "class_names"),
        ({"class_names": ["cat", "dog", "cat"]}, "class_names: Value error, class names must be"),
        ({"input": {"height": 0, "width": 64}}, "input.height"),
        ({"input": {"height": 64, "width": 64, "channels": 4}}, "input.channels"),
        ({"input": {"height": 64, "width": 64, "dtype": "uint8"}}, "input.dtype"),
        ({"input": None}, "input"),
        ({"version": "one"}, "version"),
    ],
)
def test_metadata_outside_the_schema_is_refused_naming_the_field(
    tmp_path: Path, change: dict, named: str
) -> None:
    fields = {**CLASSIFIER_FIELDS, **change}
    folder = write(tmp_path / CLASSIFIER / str(fields["version"]), fields)
    with pytest.raises(MetadataError, match=f"does not fit the contract: {named}"):
        read_metadata(folder)


def test_an_autoencoder_needs_a_positive_code_dim(tmp_path: Path) -> None:
    fields = {**CLASSIFIER_FIELDS, "name": AUTOENCODER, "code_dim": 0}
    with pytest.raises(MetadataError, match="code_dim"):
        read_metadata(write(tmp_path / AUTOENCODER / "1", fields))


@pytest.mark.parametrize(
    ("folder_name", "version", "fields", "reason"),
    [
        (CLASSIFIER, "2", CLASSIFIER_FIELDS, "expected 'signs_classifier' version 2"),
        (AUTOENCODER, "1", CLASSIFIER_FIELDS, "expected 'malaria_autoencoder' version 1"),
        (CLASSIFIER, "1", [1, 2], "expected a JSON object"),
    ],
)
def test_metadata_must_name_its_own_folder(
    tmp_path: Path, folder_name: str, version: str, fields: object, reason: str
) -> None:
    with pytest.raises(MetadataError, match=reason):
        read_metadata(write(tmp_path / folder_name / version, fields))


def test_missing_and_unreadable_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / CLASSIFIER / "1"
    empty.mkdir(parents=True)
    with pytest.raises(MetadataError, match="metadata.json is missing"):
        read_metadata(empty)
    (empty / METADATA_FILE).write_text("{not json")
    with pytest.raises(MetadataError, match="unreadable JSON"):
        read_metadata(empty)


OOD_BLOCK = {
    "score": "feature_mahalanobis",
    "output": "ood_score",
    "signatures": ["serving_default"],
    "threshold": 10.0,
    "auroc": 0.97,
    "test_false_flag_rate": 0.01,
    "negatives": {"noise": {"images": 100, "auroc": 1.0, "flagged_rate": 0.9}},
    "candidates": {"energy": {"threshold": -2.5, "auroc": 0.8, "test_false_flag_rate": 0.02}},
}
CALIBRATION_BLOCK = {
    "temperature": 1.5,
    "test_ece_before": 0.03,
    "test_ece_after": 0.02,
    "test_reliability_before": {"confidence": [0.9], "accuracy": [0.8], "count": [10]},
}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"threshold": "high"}, "ood.threshold"),
        ({"threshold": "10"}, "ood.threshold"),  # a number, not text that looks like one
        ({"threshold": True}, "ood.threshold"),
        ({"threshold": float("nan")}, "ood.threshold"),
        ({"threshold": None}, "ood.threshold"),
        ({"output": ""}, "ood.output"),
        ({"signatures": "serving_default"}, "ood.signatures"),
        ({"negatives": {"noise": {"images": -1}}}, "ood.negatives.noise.images"),
    ],
)
def test_an_ood_block_outside_the_schema_is_refused_naming_the_field(
    change: dict, named: str
) -> None:
    with pytest.raises(MetadataError, match=f"does not fit the contract: {named}"):
        validate({**CLASSIFIER_FIELDS, "ood": {**OOD_BLOCK, **change}}, "here")


def test_a_calibration_needs_a_positive_temperature() -> None:
    with pytest.raises(MetadataError, match="calibration.temperature"):
        validate({**CLASSIFIER_FIELDS, "calibration": {"temperature": 0}}, "here")


def test_blocks_are_typed_and_what_a_file_leaves_out_keeps_the_default() -> None:
    metadata = validate({**CLASSIFIER_FIELDS, "ood": OOD_BLOCK}, "here")
    assert isinstance(metadata, ClassifierMetadata) and isinstance(metadata.ood, OodSpec)
    assert metadata.ood.higher_is_ood is True  # not in the file: the default direction
    assert metadata.ood.negatives is not None and metadata.ood.negatives["noise"].images == 100
    assert metadata.calibration is None and metadata.init_from is None
    assert validate(CLASSIFIER_FIELDS, "here").ood is None  # no block: no check


def test_unmeasured_figures_are_left_out_of_the_file_and_unknown_ones_kept() -> None:
    figures = OodFigures(threshold=2.0, auroc=None, extra=None)
    assert json.loads(figures.model_dump_json()) == {"threshold": 2.0, "extra": None}


def test_summaries_show_what_the_file_holds_and_reports_the_blocks_as_written() -> None:
    fields = {**CLASSIFIER_FIELDS, "ood": OOD_BLOCK, "calibration": CALIBRATION_BLOCK}
    metadata = validate({**fields, "metrics": {"test_accuracy": 0.9}}, "here")
    assert metadata.summary() == {
        "metrics": {"test_accuracy": 0.9},
        "created": None,
        "class_names": ["0", "1"],
        "ood": {"score": "feature_mahalanobis", "threshold": 10.0, "auroc": 0.97}
        | {"test_false_flag_rate": 0.01},  # higher_is_ood is not in the file: not shown
        "calibration": {"temperature": 1.5, "test_ece_before": 0.03, "test_ece_after": 0.02},
    }
    assert metadata.report() == {
        "created": None,
        "metrics": {"test_accuracy": 0.9},
        "ood": OOD_BLOCK,
        "calibration": CALIBRATION_BLOCK,
    }
    autoencoder = validate({**fields, "name": AUTOENCODER, "code_dim": 8}, "here")
    assert autoencoder.summary()["code_dim"] == 8 and "class_names" not in autoencoder.summary()
    assert validate({"name": INDEX, "version": 1}, "here").report()["ood"] is None


def test_the_metrics_entries_of_a_check_are_its_headline_figures() -> None:
    spec = OodSpec.model_validate({**OOD_BLOCK, "noisy_test_false_flag_rate": {"0.1": 0.2}})
    assert spec.as_metrics() == {
        "ood": {
            "score": "feature_mahalanobis",
            "threshold": 10.0,
            "auroc": 0.97,
            "test_false_flag_rate": 0.01,
            "noisy_test_false_flag_rate": {"0.1": 0.2},
        }
    }
    assert spec.headline().model_dump() == {
        key: value for key, value in spec.as_metrics()["ood"].items() if key != "score"
    }
    calibration = CalibrationSpec.model_validate(CALIBRATION_BLOCK)
    assert calibration.as_metrics() == {"test_ece_before": 0.03, "test_ece_after": 0.02}


def test_a_jobs_fields_are_stamped_and_checked_against_the_stamps_model() -> None:
    stamp = VersionStamp(name=CLASSIFIER, version=3, created="now", commit=None)
    fields = ClassifierFields(
        input=InputSpec.square(32),
        class_names=["cat", "dog"],
        ood=OodSpec.model_validate(OOD_BLOCK),
        init_from=InitFromSpec(
            folder="m/signs_classifier/1",
            name=CLASSIFIER,
            version=1,
            source_classes=["a", "b"],
            new_head=True,
        ),
    )
    metadata = stamped(stamp, fields, "here")
    assert isinstance(metadata, ClassifierMetadata)
    assert (metadata.name, metadata.version, metadata.class_names) == (
        CLASSIFIER,
        3,
        ["cat", "dog"],
    )
    written = json.loads(to_json(metadata))
    assert written["ood"] == OOD_BLOCK | {
        "higher_is_ood": True,
        "in_distribution": "the training data",
    }
    assert written["init_from"]["layers_fresh"] == []
    with pytest.raises(
        MetadataError, match="here: metadata.json does not fit the contract: code_dim"
    ):
        stamped(VersionStamp(name=AUTOENCODER, version=1), fields, "here")
