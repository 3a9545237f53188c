"""metadata.json: the files training writes fit the schema, and bad ones are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.layout import AUTOENCODER, CLASSIFIER, INDEX, METADATA_FILE
from contract.metadata import (
    AutoencoderMetadata,
    ClassifierMetadata,
    IndexMetadata,
    MetadataError,
    VersionMetadata,
    read_metadata,
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
