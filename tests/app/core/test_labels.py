"""The labels file: validation, atomic writes, and how labels pick a version."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.core.errors import InvalidModelError, NotFoundError
from app.core.labels import Labels, parse_labels, read_labels, write_labels
from app.core.registry import ModelVersions


def versions(labels: Labels, *loaded: int) -> ModelVersions:
    """Loaded versions stand in as plain objects: selection only reads ``.version``."""
    return ModelVersions({v: SimpleNamespace(version=v) for v in loaded}, labels)  # type: ignore[misc]


def test_written_labels_read_back_and_leave_no_temporary_file(tmp_path: Path) -> None:
    labels = Labels({"stable": 3, "canary": 4}, 0.25)
    assert write_labels(tmp_path, labels)
    assert read_labels(tmp_path) == labels
    assert [path.name for path in tmp_path.iterdir()] == ["labels.json"]
    assert read_labels(tmp_path / "elsewhere") is None


def test_write_reports_a_folder_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert write_labels(blocker, Labels({"stable": 1})) is False


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([], "expected"),
        ({"labels": {"stable": 1}, "weights": {}}, "expected"),
        ({"labels": ["stable"]}, "must map"),
        ({"labels": {"Stable!": 1}}, "label 'Stable!'"),
        ({"labels": {"stable": 0}}, "positive integer"),
        ({"labels": {"stable": True}}, "positive integer"),
        ({"canary_share": 1.5}, "between 0 and 1"),
        ({"canary_share": "half"}, "must be a number"),
    ],
)
def test_flawed_label_documents_are_refused(document: object, reason: str) -> None:
    with pytest.raises(InvalidModelError, match=reason):
        parse_labels(document, "labels.json")


def test_unreadable_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text("{")
    with pytest.raises(InvalidModelError, match="not JSON"):
        read_labels(tmp_path)


def test_default_is_stable_when_loaded_else_the_newest() -> None:
    assert versions(Labels(), 3, 2).default.version == 3
    assert versions(Labels({"stable": 2}), 3, 2).default.version == 2
    assert versions(Labels({"stable": 1}), 3, 2).default.version == 3  # stable not loaded
    assert versions(Labels()).default is None


def test_pins_labels_and_the_canary_share() -> None:
    chosen = versions(Labels({"stable": 2, "canary": 3, "old": 2}, 0.3), 3, 2)
    assert chosen.select("m", None, None, draw=0.29).version == 3  # within the share
    assert chosen.select("m", None, None, draw=0.3).version == 2
    assert chosen.select("m", 2, None, draw=0.0).version == 2  # a pin is never the canary
    assert chosen.select("m", None, "old", draw=0.0).version == 2
    with pytest.raises(NotFoundError, match="version 1 is not loaded"):
        chosen.select("m", 1, None, draw=0.5)
    with pytest.raises(NotFoundError, match="no label 'x'"):
        chosen.select("m", None, "x", draw=0.5)
    assert json.dumps(chosen.describe())  # /models can show it
