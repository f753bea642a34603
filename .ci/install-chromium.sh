#!/usr/bin/env bash
# Installs headless Chromium (Debian's `chromium` package), which the status-page test uses to
# render `GET /` of the admin listener, read the DOM after its scripts ran, and write a
# screenshot. Verified: chromium 156.0.8078.129-1~deb12u1 (Debian 12).
# Idempotent: does nothing when chromium is there. Run as root on Debian 12.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "install-chromium: $(chromium --version 2>/dev/null | head -1)"
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || {
    echo "install-chromium: no apt-get; install chromium yourself" >&2
    exit 1
}
echo "install-chromium: apt-get install chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null 2>&1 || { echo "install-chromium: no chromium after apt-get" >&2; exit 1; }
echo "install-chromium: $(chromium --version 2>/dev/null | head -1)"
