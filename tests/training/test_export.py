"""Atomic export: a version folder appears complete or not at all, whatever goes wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from contract.layout import CLASSIFIER, METADATA_FILE, versions
from contract.metadata import MetadataError, read_metadata
from training.export import next_version, write_version

NAME = "some_model"  # a name without its own schema: only the common fields are required


def write_two_files(folder: Path) -> None:
    (folder / "saved_model.pb").write_bytes(b"model")
    (folder / "report").mkdir()
    (folder / "report" / "metrics.json").write_text("{}")


def entries(model_root: Path) -> list[str]:
    return sorted(path.name for path in model_root.iterdir())


def test_versions_are_numbered_in_order_with_full_metadata(tmp_path: Path) -> None:
    first = write_version(tmp_path, NAME, write_two_files, {"metrics": {"accuracy": 0.5}})
    second = write_version(
        tmp_path, NAME, write_two_files, {"metrics": {"accuracy": np.float32(0.75)}}
    )
    assert (first.name, second.name) == ("1", "2")
    assert entries(tmp_path / NAME) == ["1", "2"]  # no temporary folder left behind
    metadata = json.loads((second / METADATA_FILE).read_text())
    assert (metadata["name"], metadata["version"]) == (NAME, 2)
    assert metadata["metrics"] == {"accuracy": 0.75}
    assert metadata["created"] and metadata["tensorflow_version"]
    assert len(metadata["commit"]) == 40  # this checkout's git commit
    assert (second / "report" / "metrics.json").is_file()
    assert read_metadata(second).metrics == {"accuracy": 0.75}  # what the server reads


def test_metadata_that_breaks_the_contract_is_refused_before_any_file_is_written(
    tmp_path: Path,
) -> None:
    def must_not_run(folder: Path) -> None:
        raise AssertionError("the payload was written for metadata that cannot serve")

    fields = {"input": {"height": 64, "width": 64}, "class_names": []}
    with pytest.raises(MetadataError, match="class_names"):
        write_version(tmp_path, CLASSIFIER, must_not_run, fields)
    assert entries(tmp_path / CLASSIFIER) == []


@pytest.mark.parametrize("interruption", [OSError("disk full"), KeyboardInterrupt()])
def test_a_payload_writer_failing_midway_leaves_no_version_and_no_temporary_folder(
    tmp_path: Path, interruption: BaseException
) -> None:
    write_version(tmp_path, NAME, write_two_files, {})

    def write_half_then_fail(folder: Path) -> None:
        (folder / "saved_model.pb").write_bytes(b"half a model")
        raise interruption

    with pytest.raises(type(interruption)):
        write_version(tmp_path, NAME, write_half_then_fail, {})
    assert entries(tmp_path / NAME) == ["1"]
    assert write_version(tmp_path, NAME, write_two_files, {}).name == "2"  # no number skipped


def test_metadata_that_cannot_be_written_leaves_no_version(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_version(tmp_path, NAME, write_two_files, {"data": {"x": object()}})
    assert entries(tmp_path / NAME) == []


def test_a_process_killed_midway_leaves_only_a_hidden_folder_nobody_loads(tmp_path: Path) -> None:
    """A hard crash (no ``finally`` runs) leaves ``.tmp-*``: training and serving skip it,
    and the next export deletes it."""
    child = os.fork()
    if child == 0:  # the child dies inside the payload writer, as a killed process would

        def write_half_then_die(folder: Path) -> None:
            (folder / "saved_model.pb").write_bytes(b"half a model")
            os._exit(3)

        try:
            write_version(tmp_path, NAME, write_half_then_die, {})
        finally:
            os._exit(4)  # the child must never return into pytest, whatever happened
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    model_root = tmp_path / NAME
    (leftover,) = entries(model_root)
    assert leftover.startswith(".tmp-")
    assert not (model_root / leftover / METADATA_FILE).exists()
    assert versions(model_root) == [] and next_version(model_root) == 1  # serving lists alike
    assert write_version(tmp_path, NAME, write_two_files, {}).name == "1"
    assert entries(model_root) == ["1"]  # the next export removed the dead writer's folder
