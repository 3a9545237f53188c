"""A user's own folders, end to end: class folders and cell folders train through the CLI,
export as new versions, and the server answers with the user's class and label names."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.gallery.store import UNLABELLED
from app.main import create_app
from contract.layout import AUTOENCODER, CLASSIFIER, INDEX
from tests.app.helpers import running_client, settings_for
from tests.training import image_folders
from tests.training.image_folders import USER_CELLS, USER_CLASSES, USER_IMAGE_SIZE
from training import cli
from training.errors import DataError
from training.evaluate import evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def user_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_folders.train_user_models(tmp_path_factory.mktemp("user"))


def metadata(models: Path, name: str, version: int = 1) -> dict[str, Any]:
    return json.loads((models / name / str(version) / "metadata.json").read_text())


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_classifier_records_the_users_classes_size_and_per_class_scores(
    user_models: Path,
) -> None:
    fields = metadata(user_models, CLASSIFIER)
    names = sorted(USER_CLASSES)
    assert fields["class_names"] == names
    assert (fields["input"]["height"], fields["input"]["width"]) == (USER_IMAGE_SIZE,) * 2
    assert fields["data"]["layout"] == "class folders"
    assert sum(fields["data"]["class_counts"]["test"].values()) == fields["metrics"]["test_images"]
    per_class = fields["metrics"]["test_per_class"]
    assert list(per_class) == names
    assert all(set(scores) == {"precision", "recall", "support"} for scores in per_class.values())
    weights = fields["hyperparameters"]["class_weights"]
    assert weights["dog house"] > weights["zebra"] > weights["Cat"]  # rarer weighs more
    assert "malaria_cells" not in fields["ood"]["negatives"]  # no malaria data needed
    assert fields["ood"]["in_distribution"].startswith("images of the classes Cat, dog house")
    report = user_models / CLASSIFIER / "1" / "report"
    assert (report / "confusion_matrix.png").is_file()
    assert json.loads((report / "metrics.json").read_text())["test_per_class"] == per_class


def test_the_cell_models_learn_the_users_size_and_labels(user_models: Path) -> None:
    encoder = metadata(user_models, AUTOENCODER)
    assert encoder["input"]["height"] == USER_IMAGE_SIZE
    assert encoder["data"]["label_names"] == sorted(USER_CELLS)
    assert encoder["ood"]["in_distribution"].startswith("cell images like those in ")
    index = metadata(user_models, INDEX)
    assert index["data"]["label_names"] == sorted(USER_CELLS)
    assert index["size"] == index["data"]["split_sizes"]["train"]
    assert set(index["metrics"]["precision_at_10"]) == {"all", *USER_CELLS}
    labels = set(np.load(user_models / INDEX / "1" / "gallery.npz")["labels"].tolist())
    assert labels == {"", *USER_CELLS}  # "" for the unlabelled cells


@pytest.mark.anyio
async def test_the_server_answers_with_the_users_names_and_size(user_models: Path) -> None:
    upload = png(image_folders.picture(1, 0, (90, 70)))  # a "dog house" picture, another size
    async with running_client(create_app(settings_for(user_models))) as client:
        answer = (await client.post("/classify", files={"file": ("x.png", upload)})).json()
        models = (await client.get("/models")).json()
        similar = await client.post("/similar", params={"k": 5}, files={"file": ("c.png", upload)})
        denoised = await client.post("/denoise", files={"file": ("c.png", upload)})
    (prediction,) = answer["predictions"]
    assert prediction["label"] in USER_CLASSES
    assert sorted(prediction["probabilities"]) == sorted(USER_CLASSES)
    (classifier,) = [model for model in models["models"] if model["name"] == CLASSIFIER]
    assert classifier["class_names"] == sorted(USER_CLASSES)
    assert classifier["input_shape"] == [USER_IMAGE_SIZE, USER_IMAGE_SIZE, 3]
    assert similar.status_code == 200
    # The unlabelled cells of the index are gallery items labelled "unlabelled".
    assert {result["label"] for result in similar.json()["results"]} <= {UNLABELLED, *USER_CELLS}
    assert denoised.status_code == 200
    assert Image.open(io.BytesIO(denoised.content)).size == (USER_IMAGE_SIZE, USER_IMAGE_SIZE)


@pytest.mark.anyio
async def test_init_from_exports_a_new_version_that_pins_and_rolls_back_like_any(
    user_models: Path, tmp_path: Path
) -> None:
    data = image_folders.write_class_folders(tmp_path / "two", {"left": 6, "right": 6})
    out = shutil.copytree(user_models, tmp_path / "models")
    source = out / CLASSIFIER / "1"
    arguments = ["signs", "--data", str(data), "--out", str(out), "--image-size", "48"]
    assert cli.main([*arguments, "--quick", "--epochs", "1", "--init-from", str(source)]) == 0
    fields = metadata(out, CLASSIFIER, version=2)
    assert fields["class_names"] == ["left", "right"]
    record = fields["init_from"]
    assert (record["name"], record["version"], record["new_head"]) == (CLASSIFIER, 1, True)
    assert record["source_classes"] == sorted(USER_CLASSES)
    assert record["layers_copied"] == 9  # 4 convolutions, 4 batch norms, the first dense
    assert record["layers_frozen"] == 8  # the convolution stages: only the dense head trains
    assert len(record["layers_fresh"]) == 1  # the output layer: a new head for 2 classes

    upload = {"file": ("x.png", png(image_folders.picture(0, 0, (50, 50))))}
    async with running_client(create_app(settings_for(out))) as client:
        newest = await client.post("/classify", files=upload)
        pinned = await client.post("/classify", params={"version": 1}, files=upload)
        assert (await client.post(f"/admin/rollback/{CLASSIFIER}")).status_code == 200
        rolled_back = await client.post("/classify", files=upload)
        models = (await client.get("/models")).json()
    assert newest.headers["X-Model-Version"] == "2"
    assert sorted(newest.json()["predictions"][0]["probabilities"]) == ["left", "right"]
    for answer in (pinned, rolled_back):
        assert answer.headers["X-Model-Version"] == "1"
        assert sorted(answer.json()["predictions"][0]["probabilities"]) == sorted(USER_CLASSES)
    (classifier,) = [model for model in models["models"] if model["name"] == CLASSIFIER]
    assert classifier["input_shape"] == [USER_IMAGE_SIZE, USER_IMAGE_SIZE, 3]  # serving v1


def test_a_bad_init_from_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = image_folders.write_class_folders(tmp_path / "two", {"left": 3, "right": 3})
    arguments = ["signs", "--data", str(data), "--out", str(tmp_path / "m")]
    assert cli.main([*arguments, "--init-from", str(tmp_path / "nothing")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"error: --init-from: no such folder: {tmp_path}/nothing"
    )


def test_evaluate_scores_a_version_on_class_folders_by_its_own_names(
    user_models: Path, tmp_path: Path
) -> None:
    version = user_models / CLASSIFIER / "1"
    result = evaluate(version, user_models.parent / "classes")
    assert result["images"] == sum(USER_CLASSES.values())
    assert list(result["per_class"]) == sorted(USER_CLASSES)
    assert [s["support"] for s in result["per_class"].values()] == [30, 8, 12]
    stranger = image_folders.write_class_folders(tmp_path / "other", {"Cat": 3, "horse": 3})
    with pytest.raises(DataError, match="classes the model does not know: horse"):
        evaluate(version, stranger)
