"""The SavedModel signatures every exported model offers, by name.

Each signature takes one float32 tensor ``images`` of shape ``[batch, height, width, 3]``
(see ``contract.pixels``) and returns a dict with one output tensor, and ``OOD_SCORE`` too
where the version's metadata names it in its ``ood`` block.
"""

from __future__ import annotations

INPUT = "images"

DEFAULT = "serving_default"  # what a SavedModel loader calls when no signature is named
CLASSIFY = DEFAULT
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
# [batch]: how unlike the training data each input is, in the score's own units; the
# ``ood`` block of ``metadata.json`` names the output, its signatures and the threshold.
OOD_SCORE = "ood_score"

# Signature -> output tensor: what the server calls and what the exporter must provide.
CLASSIFIER_OUTPUTS = {CLASSIFY: PROBABILITIES}
AUTOENCODER_OUTPUTS = {
    DEFAULT: IMAGES,
    DENOISE: IMAGES,
    ENCODE: CODES,
    ENCODE_CODES: CODES,
    BOTTLENECK: CODES,
}
AUTOENCODER_SERVED = {DENOISE: IMAGES, ENCODE: CODES}  # the server needs only these two
AUTOENCODER_OPTIONAL = {ENCODE_CODES: CODES}  # the server uses it where a version has it
# The signatures whose outputs include OOD_SCORE when a version is exported with a score.
CLASSIFIER_SCORED = [CLASSIFY]
AUTOENCODER_SCORED = [DENOISE, ENCODE, DEFAULT]
