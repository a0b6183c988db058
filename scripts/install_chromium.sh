#!/usr/bin/env bash
# Install Debian's headless-capable Chromium (used by the report rendering test) when it is missing.
# Prints the browser's path and exits 0 when a browser is available; exits 1 with a reason otherwise.
set -euo pipefail
for name in chromium chromium-browser; do
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; exit 0; fi
done
if [ "$(id -u)" != "0" ]; then
  echo "chromium is missing and installing it needs root (apt-get install -y chromium)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium is missing and there is no apt-get to install it" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >&2
command -v chromium
