#!/usr/bin/env bash
# Installs the policy toolchains for JavaScript (jco + ComponentizeJS, npm), Python
# (componentize-py, PyPI) and C (clang, lld, wasi-libc, Debian), for `sluice policy build` and
# the tests that build every example in every language. Idempotent; run as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")"
for lang in c js python; do
    echo "== toolchain: $lang"
    bash "./install-$lang.sh"
done
