"""The SIGNS gesture classifier: a small ``tf.keras.Sequential`` CNN that outputs logits.

Logits (not probabilities) keep the loss numerically stable during training; the exported
serving signature applies the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture knobs; recorded in the model's metadata as hyperparameters."""

    filters: tuple[int, ...] = (16, 32, 64, 128)
    dense_units: int = 128
    dropout: float = 0.2
    l2: float = 1e-4
    batch_norm_momentum: float = 0.9  # Keras' 0.99 lags far behind with ~25 steps per epoch
    # A stride-2 first convolution cuts inference CPU per image 2.6-2.9x at batch 16-32, with
    # validation accuracy within two images of 162 over three seeds (README, "Choosing the
    # classifier's stem").
    stem_stride: int = 2

    @property
    def downscale(self) -> int:
        """How many times smaller the last feature map's side is than the input's."""
        return self.stem_stride * 2 ** len(self.filters)


def build_classifier(
    image_size: int, n_classes: int, config: ClassifierConfig = ClassifierConfig()
) -> tf.keras.Sequential:
    """Conv -> BatchNorm -> ReLU -> MaxPool per stage (the first conv strided), then Flatten,
    Dropout and Dense.

    BatchNormalization lets the small data set train quickly at a high learning rate; the
    L2 penalty and dropout hold back overfitting on ~750 training images.
    """
    if image_size < config.downscale:
        raise ValueError(
            f"image size {image_size} is too small: the network shrinks it {config.downscale}x"
        )
    regularizer = tf.keras.regularizers.L2(config.l2)
    layers: list[tf.keras.layers.Layer] = [tf.keras.Input((image_size, image_size, 3))]
    for stage, filters in enumerate(config.filters):
        layers += [
            tf.keras.layers.Conv2D(
                filters,
                3,
                strides=config.stem_stride if stage == 0 else 1,
                padding="same",
                use_bias=False,
                kernel_regularizer=regularizer,
            ),
            tf.keras.layers.BatchNormalization(momentum=config.batch_norm_momentum),
            tf.keras.layers.ReLU(),
            tf.keras.layers.MaxPooling2D(),
        ]
    layers += [
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dropout(config.dropout),
        tf.keras.layers.Dense(
            config.dense_units, activation="relu", kernel_regularizer=regularizer
        ),
        tf.keras.layers.Dropout(config.dropout),
        tf.keras.layers.Dense(n_classes, kernel_regularizer=regularizer),
    ]
    return tf.keras.Sequential(layers, name="signs_classifier")
