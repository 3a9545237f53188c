"""The classifier job (``python -m training signs``): SIGNS hand gestures by default, or any
class folders.

- ``train``: the job itself: load, train, calibrate, evaluate, export.
- ``data``: class folders, SIGNS files or the course's HDF5 files, split three ways.
- ``classifier``: the Keras model; ``custom_loop``: its distributed training loop.
- ``trust``: the temperature and the out-of-distribution score baked into the export;
  ``calibration``: temperature scaling and the calibration error.
- ``transfer``: ``--init-from``, starting from another version's weights.
- ``signatures``: the exported SavedModel's serving signature.
"""
