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
from keras import layers


@dataclass(frozen=True)
class AutoencoderParts:
    encoder: keras.Model
    decoder: keras.Model
    autoencoder: keras.Model
    embedder: keras.Model

    @property
    def code_dim(self) -> int:
        return int(self.embedder.output.shape[-1])


def build_autoencoder(
    image_size: int, filters: Sequence[int] = (32, 64), code_channels: int = 64
) -> AutoencoderParts:
    """``len(filters)`` Conv2D + MaxPooling stages down to an ``(S / 2^n)``-sided code with
    ``code_channels`` channels, mirrored by stride-2 Conv2DTranspose stages back up."""
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
    retrieval_maps = layers.Conv2D(code_channels, 3, padding="same", name="enc_retrieval")(features)
    encoder = keras.Model(images, code, name="encoder")

    code_input = keras.Input(code.shape[1:], name="code")
    pixels = code_input
    for depth, width in enumerate(reversed(filters)):
        pixels = layers.Conv2DTranspose(
            width, 3, strides=2, padding="same", activation="relu", name=f"dec_up{depth}"
        )(pixels)
    reconstruction = layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="dec_pixels")(
        pixels
    )
    decoder = keras.Model(code_input, reconstruction, name="decoder")

    autoencoder = keras.Model(images, decoder(encoder(images)), name="autoencoder")
    pooled = layers.GlobalMaxPooling2D(name="code_pool")(retrieval_maps)
    embedder = keras.Model(images, pooled, name="embedder")
    return AutoencoderParts(encoder, decoder, autoencoder, embedder)
