#!/usr/bin/env bash
# Install a real Milvus 2.3.5 standalone server for the Milvus gallery store's tests
# (tests/app/gallery/milvus_server.py starts it on free ports in a temporary folder, and
# stops it): PyPI's `milvus` package, which ships the server binary and its launcher
# `milvus-server`, in a virtual environment of its own, .venv-milvus, because it needs
# setuptools < 70 (its launcher imports pkg_resources) and nothing of the project's.
# Idempotent: a working install is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-milvus
version=2.3.5
python=${PYTHON:-python3}

installed() {
  [ -x "$venv/bin/milvus-server" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("milvus"))' 2> /dev/null)" = "$version" ]
}

if installed; then
  echo "milvus ready: $venv/bin/milvus-server ($version)"
  exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "milvus==$version" "setuptools<70"
if ! installed; then
  echo "milvus $version did not install into $venv" >&2
  exit 1
fi
echo "milvus ready: $venv/bin/milvus-server ($version)"
