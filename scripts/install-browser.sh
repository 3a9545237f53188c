#!/usr/bin/env bash
# Install what the browser tests need: Debian's Chromium (via apt-get, when missing) and the
# Playwright Python package in .venv. Playwright's own browser download is not used: the tests
# launch /usr/bin/chromium, so this works without access to Playwright's CDN. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium > /dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    sudo_cmd=()
  elif command -v sudo > /dev/null; then
    sudo_cmd=(sudo)
  else
    echo "chromium is missing and neither root nor sudo is available to install it" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq chromium chromium-driver > /dev/null
fi

if ! .venv/bin/python -c "import playwright" 2> /dev/null; then
  .venv/bin/python -m pip install --quiet playwright
fi
echo "browser ready: $(chromium --version 2> /dev/null)"
