"""Benchmarks of serving, the input pipeline and the FAISS index: ``python -m tests.perf``."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
