"""Offline training jobs: data loading, models, loops, export and evaluation.

Nothing in ``app/`` imports this package: the exported SavedModel folders and their
``metadata.json`` are the only contract between training and serving.
"""
