#!/usr/bin/env bash
# Installs promtool (Debian's `prometheus` package), which the metrics test runs as
# `promtool check metrics` on a scrape of `GET /metrics`. Verified: prometheus
# 2.42.0+ds-5+deb12u1 (Debian 12). Without recommends it does not pull in node-exporter
# and friends; the package's service is not started by this script.
# Idempotent: does nothing when promtool is there. Run as root on Debian 12.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    echo "install-promtool: $(promtool --version 2>&1 | head -1)"
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || {
    echo "install-promtool: no apt-get; install promtool (Debian package: prometheus) yourself" >&2
    exit 1
}
echo "install-promtool: apt-get install prometheus"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null 2>&1 || { echo "install-promtool: no promtool after apt-get" >&2; exit 1; }
echo "install-promtool: $(promtool --version 2>&1 | head -1)"
