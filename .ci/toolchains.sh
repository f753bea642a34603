#!/usr/bin/env bash
# Installs the policy toolchains for JavaScript (jco + ComponentizeJS, npm), Python
# (componentize-py, PyPI) and C (clang, lld, wasi-libc, Debian), for `sluice policy build` and
# the tests that build every example in every language; and promtool, which the metrics test
# runs on a scrape, headless Chromium for the status-page test, and redis-server for the
# fleet tests. Idempotent; run as root
# or with sudo.
set -euo pipefail
cd "$(dirname "$0")"
for tool in c js python promtool chromium redis; do
    echo "== toolchain: $tool"
    bash "./install-$tool.sh"
done
