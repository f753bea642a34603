#!/usr/bin/env bash
# Installs redis-server and redis-cli (Debian's `redis-server` package, which pulls in
# `redis-tools`), which the fleet tests start on loopback ports of their own (one server per
# test, so a test that kills its server touches no other). Verified: redis 7.0.15 (Debian 12).
# The package's own service is stopped and disabled: the tests need only the binaries.
# Idempotent: does nothing when both binaries are there. Run as root on Debian 12.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    echo "install-redis: $(redis-server --version | cut -d' ' -f1-3)"
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || {
    echo "install-redis: no apt-get; install redis-server and redis-cli (Debian package: redis-server) yourself" >&2
    exit 1
}
echo "install-redis: apt-get install redis-server"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# A service started by the package would hold port 6379; nothing here uses it.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
command -v redis-server >/dev/null 2>&1 || { echo "install-redis: no redis-server after apt-get" >&2; exit 1; }
echo "install-redis: $(redis-server --version | cut -d' ' -f1-3)"
