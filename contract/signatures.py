"""The SavedModel signatures every exported model offers, by name.

Each signature takes one float32 tensor ``images`` of shape ``[batch, height, width, 3]``
(see ``contract.pixels``) and returns a dict with one output tensor.
"""

from __future__ import annotations

INPUT = "images"

CLASSIFY = "serving_default"
DENOISE = "denoise"
ENCODE = "encode"
# Optional (autoencoder): the flattened decoder bottleneck, the lab's retrieval baseline;
# its output is CODES, [batch, bottleneck values], not normalised.
BOTTLENECK = "bottleneck"
# Optional (autoencoder): ENCODE's CODES alone, without the OOD score ENCODE also computes
# (a third of its cost); the index is built from it.
ENCODE_CODES = "encode_codes"

PROBABILITIES = "probabilities"  # [batch, classes], rows sum to 1
IMAGES = "images"  # [batch, height, width, 3] in [0, 1]
CODES = "codes"  # [batch, code_dim], L2-normalised

# Signature -> output tensor: what the server calls and what the exporter must provide.
CLASSIFIER_OUTPUTS = {CLASSIFY: PROBABILITIES}
AUTOENCODER_OUTPUTS = {
    "serving_default": IMAGES,
    DENOISE: IMAGES,
    ENCODE: CODES,
    ENCODE_CODES: CODES,
    BOTTLENECK: CODES,
}
AUTOENCODER_SERVED = {DENOISE: IMAGES, ENCODE: CODES}  # the server needs only these two
