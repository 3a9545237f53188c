#!/usr/bin/env bash
# Create .venv and install the project with the given extras (default: dev). Idempotent.
# Extras: server, training, gpu (= server + training with CUDA), dev (= server + training +
# test tools). No extra at all ("") installs only the command-line client.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1-dev}"  # "" (given explicitly) means no extra
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
