#!/usr/bin/env bash
# Set up .venv (Chromium for the browser tests, nginx for the proxy tests, a Milvus server for
# the gallery's Milvus store), lint and type-check, then run the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
if [ -f scripts/install-browser.sh ]; then
  bash scripts/install-browser.sh || echo "browser install failed: browser tests will be skipped"
fi
bash scripts/install-nginx.sh || echo "nginx install failed: tests/docker/test_nginx.py will be skipped"
bash scripts/install-wrk.sh || echo "wrk install failed: the wrk benchmark test will be skipped"
bash scripts/install-milvus.sh || echo "Milvus install failed: the Milvus store tests will be skipped"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
