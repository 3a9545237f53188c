"""The convolutional autoencoder, built with the functional ``keras.Model`` API.

Models sharing one set of layers: ``encoder`` (image -> spatial code), ``decoder``
(spatial code -> image), ``autoencoder`` (both) and ``embedder`` (image -> retrieval code).
The embedder reads the encoder's convolution trunk and global-max-pools its own feature
maps: a parasite is a dark spot *anywhere* in the cell, so a position-free "is this feature
present" code suits retrieval far better than the flattened spatial code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf
from keras import layers

SYMMETRIES = 8  # of the square: 4 rotations, each also transposed


@dataclass(frozen=True)
class AutoencoderParts:
    encoder: keras.Model
    decoder: keras.Model
    autoencoder: keras.Model
    embedder: keras.Model

    @property
    def code_dim(self) -> int:
        """Length of the retrieval code ``encode`` returns (what the index holds)."""
        return int(self.embedder.output.shape[-1])

    @property
    def bottleneck_shape(self) -> tuple[int, int, int]:
        """Height, width and channels of the code the decoder reconstructs from."""
        height, width, channels = self.encoder.output.shape[1:]
        return int(height), int(width), int(channels)


def build_autoencoder(
    image_size: int,
    filters: Sequence[int] = (32, 64),
    code_channels: int = 32,
    retrieval_dim: int = 64,
) -> AutoencoderParts:
    """``len(filters)`` Conv2D + MaxPooling stages down to an ``(S / 2^n)``-sided code with
    ``code_channels`` channels, mirrored by stride-2 Conv2DTranspose stages back up.

    The decoder sees only that code, so ``code_channels`` sets the compression: 48 px cells
    (6,912 values) through two stages and 32 channels give a 12x12x32 = 4,608-value code,
    1.5x smaller than the input. No skip connection bypasses it. The retrieval branch reads the
    same trunk and pools ``retrieval_dim`` channels (the ``encode`` output)."""
    downscale = 2 ** len(filters)
    if image_size % downscale:
        raise ValueError(f"image_size {image_size} must be divisible by {downscale}")
    images = keras.Input((image_size, image_size, 3), name="images")
    features = images
    for depth, width in enumerate(filters):
        features = layers.Conv2D(
            width, 3, padding="same", activation="relu", name=f"enc_conv{depth}"
        )(features)
        features = layers.MaxPooling2D(2, name=f"enc_pool{depth}")(features)
    code = layers.Conv2D(code_channels, 3, padding="same", activation="relu", name="enc_code")(
        features
    )
    # The retrieval branch reads the same encoder trunk as the decoder's code but has its
    # own last convolution, so position-free retrieval features and the spatial detail
    # the decoder needs do not have to share one set of channels. It is linear: with ReLU
    # a fifth of its channels died (always 0 after pooling) and carried no information.
    retrieval_maps = layers.Conv2D(retrieval_dim, 3, padding="same", name="enc_retrieval")(features)
    encoder = keras.Model(images, code, name="encoder")

    code_input = keras.Input(code.shape[1:], name="code")
    pixels = code_input
    for depth, width in enumerate(reversed(filters)):
        pixels = layers.Conv2DTranspose(
            width, 3, strides=2, padding="same", activation="relu", name=f"dec_up{depth}"
        )(pixels)
    # float32 output under a mixed-precision policy too: the loss needs the full precision.
    reconstruction = layers.Conv2D(
        3, 3, padding="same", activation="sigmoid", dtype="float32", name="dec_pixels"
    )(pixels)
    decoder = keras.Model(code_input, reconstruction, name="decoder")

    autoencoder = keras.Model(images, decoder(encoder(images)), name="autoencoder")
    pooled = layers.GlobalMaxPooling2D(dtype="float32", name="code_pool")(retrieval_maps)
    embedder = keras.Model(images, pooled, name="embedder")
    return AutoencoderParts(encoder, decoder, autoencoder, embedder)


def symmetry_averaged_codes(embedder: keras.Model, images: tf.Tensor) -> tf.Tensor:
    """L2-normalised mean of the L2-normalised codes of an image's 8 symmetries.

    A cell has no orientation, but the embedder is only roughly invariant to rotation
    and flips; averaging the views makes the code exactly invariant, so a query and its
    gallery twins match whichever way they were photographed (precision@10 +0.02 to
    +0.03 on every trained model measured). Costs 8 embedder passes, run as one batch.
    """
    batch = tf.shape(images)[0]
    transposed = tf.transpose(images, [0, 2, 1, 3])
    views = [tf.image.rot90(view, turns) for view in (images, transposed) for turns in range(4)]
    codes = tf.math.l2_normalize(embedder(tf.concat(views, axis=0), training=False), axis=-1)
    per_view = tf.reshape(codes, [SYMMETRIES, batch, -1])
    return tf.math.l2_normalize(tf.reduce_mean(per_view, axis=0), axis=-1)
