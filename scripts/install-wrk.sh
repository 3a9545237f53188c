#!/usr/bin/env bash
# Install wrk (Debian's package), the compiled HTTP load generator of benchmarks/wrk_bench.py
# and its smoke test, when missing. Idempotent; the caller tolerates failure (the test skips).
set -euo pipefail

if ! command -v wrk > /dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    sudo_cmd=()
  elif command -v sudo > /dev/null; then
    sudo_cmd=(sudo)
  else
    echo "wrk is missing and neither root nor sudo is available to install it" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq wrk > /dev/null
fi
echo "wrk ready: $(command -v wrk)"
