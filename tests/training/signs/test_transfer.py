"""``--init-from``'s two phases: the head alone on frozen stages, then every layer but the
batch norms; epochs stretched for small data; the better phase's weights kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.training import image_folders
from training import cli
from training.signs import transfer
from training.signs.classifier import ClassifierConfig, build_classifier
from training.signs.custom_loop import FitSetup, LoopConfig, LoopResult
from training.signs.transfer import TransferConfig, copy_weights, fit_transfer, phase_loop

SMALL = ClassifierConfig(filters=(8, 16), dense_units=16, dropout=0.1)
SIZE = 16


def toy_data(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes told apart by which colour channel is bright."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    images = rng.integers(0, 80, (count, SIZE, SIZE, 3)).astype(np.uint8)
    images[np.arange(count), :, :, labels] += 150
    return images, labels


def started_model() -> tuple[tf.keras.Sequential, tf.keras.Sequential]:
    """A 3-class source and a 2-class model started from it (a new head)."""
    tf.keras.utils.set_random_seed(3)
    source = build_classifier(SIZE, 3, SMALL)
    model = build_classifier(SIZE, 2, SMALL)
    copy_weights(source, model, keep_head=False)
    return source, model


def kinds(model: tf.keras.Model) -> dict[str, list[tf.keras.layers.Layer]]:
    layers = model.layers
    return {
        "convolutions": [la for la in layers if isinstance(la, tf.keras.layers.Conv2D)],
        "batch_norms": [la for la in layers if isinstance(la, tf.keras.layers.BatchNormalization)],
        "dense": [la for la in layers if isinstance(la, tf.keras.layers.Dense)],
    }


def snapshot(layers: list[tf.keras.layers.Layer]) -> list[np.ndarray]:
    return [weight.numpy().copy() for layer in layers for weight in layer.weights]


def same(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_an_imprinted_head_classifies_by_the_nearest_class_mean_of_the_features() -> None:
    """Before any training step, the new head ranks the classes as the distance from the
    copied layers' features to each class's mean feature does, with a moderate margin."""
    _, model = started_model()
    images, labels = toy_data(40, seed=5)
    transfer.imprint_head(model, images, labels)
    features = tf.keras.Model(model.inputs, model.layers[-2].output)(
        images.astype(np.float32) / 255, training=False
    ).numpy()
    means = np.stack([features[labels == label].mean(axis=0) for label in (0, 1)])
    nearest = np.argmin(((features[:, np.newaxis] - means) ** 2).sum(axis=2), axis=1)
    logits = model(images.astype(np.float32) / 255, training=False).numpy()
    np.testing.assert_array_equal(logits.argmax(axis=1), nearest)
    margins = logits.max(axis=1) - logits.mean(axis=1)
    assert np.mean(margins) == pytest.approx(transfer.IMPRINT_MARGIN, rel=1e-3)


def test_small_data_gets_more_epochs_and_patience_when_epochs_are_not_given() -> None:
    loop = LoopConfig(epochs=40, patience=10)
    stretched = phase_loop(loop, steps_per_epoch=3, scale=True, min_steps=300)
    assert (stretched.epochs, stretched.patience) == (100, 25)
    assert phase_loop(loop, steps_per_epoch=20, scale=True, min_steps=300) == loop  # 800 steps
    assert phase_loop(loop, steps_per_epoch=3, scale=False, min_steps=300) == loop  # --epochs


def test_phase_one_trains_only_the_head_and_phase_two_the_convolutions_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, model = started_model()
    layers = kinds(model)
    seen: list[dict[str, bool]] = []
    real_fit = transfer.fit_classifier

    def watched_fit(build, *arguments, **keywords):
        before = {name: snapshot(group) for name, group in layers.items()}
        trained, result = real_fit(build, *arguments, **keywords)
        assert trained is model
        after = {name: snapshot(group) for name, group in layers.items()}
        seen.append({name: not same(before[name], after[name]) for name in layers})
        return trained, result

    monkeypatch.setattr(transfer, "fit_classifier", watched_fit)
    loop = LoopConfig(epochs=2, batch_size=8, augment=False, seed=1)
    setup = FitSetup(toy_data(24, 0), toy_data(12, 1), tmp_path)
    _, result, phases = fit_transfer(lambda: model, setup, loop, scale_epochs=False)
    assert seen == [
        {"convolutions": False, "batch_norms": False, "dense": True},
        {"convolutions": True, "batch_norms": False, "dense": True},
    ]
    assert [phase.trains for phase in phases] == ["head", "all but batch norms"]
    rate = TransferConfig().fine_tune_rate
    assert rate < 1
    assert phases[1].learning_rate == pytest.approx(loop.learning_rate * rate)
    assert result.epochs_run == 4  # the two phases' histories joined
    assert (tmp_path / "head").is_dir() and (tmp_path / "all").is_dir()
    # the batch norms never moved from the source's statistics
    assert same(snapshot(kinds(source)["batch_norms"]), snapshot(layers["batch_norms"]))


def test_without_fine_tuning_the_stages_keep_the_source_weights(tmp_path: Path) -> None:
    source, model = started_model()
    loop = LoopConfig(epochs=2, batch_size=8, augment=False)
    trained, result, phases = fit_transfer(
        lambda: model,
        FitSetup(toy_data(24, 0), toy_data(12, 1), tmp_path),
        loop,
        config=TransferConfig(fine_tune=False),
        scale_epochs=False,
    )
    assert len(phases) == 1 and result.epochs_run == 2
    assert same(snapshot(kinds(source)["convolutions"]), snapshot(kinds(trained)["convolutions"]))


@pytest.mark.parametrize(("tuned_loss", "kept"), [(0.5, "tuned"), (0.9, "head")])
def test_phase_two_is_kept_only_when_its_validation_loss_is_lower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tuned_loss: float, kept: str
) -> None:
    _, model = started_model()
    marks = {"head": 1.0, "tuned": 2.0}
    losses = iter([0.8, tuned_loss])

    def fake_fit(build, *arguments, **keywords):
        trained = build()
        phase = "head" if trained.layers[0].trainable is False else "tuned"
        trained.layers[-1].kernel.assign(tf.fill(trained.layers[-1].kernel.shape, marks[phase]))
        loss = next(losses)
        history = {"loss": [1.0, 1.0], "accuracy": [0.5, 0.5]}
        history |= {"val_loss": [loss + 0.1, loss], "val_accuracy": [0.5, 0.6]}
        return trained, LoopResult(history, best_epoch=2, seconds=1.0)

    monkeypatch.setattr(transfer, "fit_classifier", fake_fit)
    loop = LoopConfig(epochs=2)
    setup = FitSetup(toy_data(4, 0), toy_data(4, 1), tmp_path)
    trained, result, _ = fit_transfer(lambda: model, setup, loop, scale_epochs=False)
    assert np.all(trained.layers[-1].kernel.numpy() == marks[kept])
    assert result.best_epoch == (4 if kept == "tuned" else 2)  # in the joined history


@pytest.mark.slow
def test_the_cli_records_both_phases_in_the_metadata(tmp_path: Path) -> None:
    data = image_folders.write_class_folders(tmp_path / "d", {"a": 6, "b": 6, "c": 6})
    out = tmp_path / "models"
    arguments = ["signs", "--data", str(data), "--out", str(out), "--image-size", "32"]
    assert cli.main([*arguments, "--epochs", "1"]) == 0
    new = image_folders.write_class_folders(tmp_path / "n", {"left": 6, "right": 6})
    source = out / "signs_classifier" / "1"
    arguments[2] = str(new)
    assert cli.main([*arguments, "--epochs", "1", "--init-from", str(source)]) == 0
    fields = json.loads((out / "signs_classifier" / "2" / "metadata.json").read_text())
    phases = fields["init_from"]["phases"]
    assert [phase["trains"] for phase in phases] == ["head", "all but batch norms"]
    assert [phase["epochs_run"] for phase in phases] == [1, 1]  # --epochs: not stretched
    assert fields["hyperparameters"]["transfer"]["fine_tune"] is True
    assert fields["metrics"]["epochs_run"] == 2


def test_frozen_stages_without_init_from_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = image_folders.write_class_folders(tmp_path / "d", {"a": 3, "b": 3})
    arguments = ["signs", "--data", str(data), "--out", str(tmp_path / "m"), "--frozen-stages"]
    assert cli.main(arguments) == 2
    assert capsys.readouterr().err.strip() == "error: --frozen-stages applies only with --init-from"
