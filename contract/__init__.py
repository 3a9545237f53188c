"""The training -> serving contract, written once.

``training/`` writes model versions through these definitions and ``app/`` reads them
through the same ones, so the two cannot drift apart. This package imports neither of them
and no TensorFlow: only numpy, Pillow and pydantic (``contract.arguments``: the standard
library alone, for the client).

- ``contract.layout``: model names, file names, version folders.
- ``contract.signatures``: SavedModel signature and tensor names.
- ``contract.metadata``: the ``metadata.json`` schema, validated on write and on read.
- ``contract.pixels``: any image -> RGB -> the float32 model input (pixel / 255).
- ``contract.training_status``: the status file a training run leaves for the server.
- ``contract.arguments``: argument types the command lines on both sides share.
"""
