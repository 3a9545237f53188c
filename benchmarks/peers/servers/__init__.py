"""One small server per peer, each run by ``python -m`` in that peer's own venv.

Every one serves the same SavedModel with the same decoding (``signs.SignsClassifier``),
batches with its framework's own dynamic batcher (at most 32 images, about 2 ms of waiting)
and takes ``--models DIR --port N`` plus its parallelism setting on the command line.
"""
