"""Benchmarks of serving, the input pipeline and the FAISS index: ``python -m benchmarks``."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
