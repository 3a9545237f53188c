#!/usr/bin/env bash
# Install Debian's nginx (via apt-get, when missing) for tests/docker/test_nginx.py, which runs
# docker/nginx/cellsign.conf for real in front of the API. Only the binary is used: the tests
# start it as their own child process with a private prefix, so no system service is started
# (Debian's policy-rc.d in containers refuses it anyway). Idempotent.
set -euo pipefail

if command -v nginx > /dev/null || [ -x /usr/sbin/nginx ]; then
  echo "nginx ready: $(/usr/sbin/nginx -v 2>&1 || nginx -v 2>&1)"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo_cmd=()
elif command -v sudo > /dev/null; then
  sudo_cmd=(sudo)
else
  echo "nginx is missing and neither root nor sudo is available to install it" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq nginx > /dev/null
echo "nginx ready: $(/usr/sbin/nginx -v 2>&1)"
