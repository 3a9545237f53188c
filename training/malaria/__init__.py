"""The cell jobs: the denoising autoencoder (``python -m training malaria``) and the
similar-cell index over its codes (``python -m training index``). NIH malaria cells by
default, or any folder of cell images.

- ``train``: the autoencoder job: load, train, evaluate, export.
- ``data``: find, split and decode the cells.
- ``autoencoder``: the Keras models; ``contrastive``: the retrieval objective beside the
  denoising one.
- ``ood``: the out-of-distribution score baked into the export; ``report``: its plots.
- ``signatures``: the exported SavedModel's signatures.
- ``index``: the index job.
"""
