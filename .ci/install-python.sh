#!/usr/bin/env bash
# Installs the Python policy toolchain for `sluice policy build` (guest-sdk/python/build.sh):
# componentize-py from PyPI, at the version verified with sluice:policy@0.3.0. It bundles its
# own CPython for wasm32-wasip2; the machine needs only python3 and pip. Idempotent.
set -euo pipefail
VERSION=0.25.1

if command -v componentize-py >/dev/null 2>&1 &&
    [ "$(componentize-py --version 2>/dev/null | awk '{print $2}')" = "$VERSION" ]; then
    echo "install-python: componentize-py $VERSION present"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || { echo "install-python: need python3 and pip" >&2; exit 1; }
    echo "install-python: apt-get install python3 python3-pip"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
fi
echo "install-python: pip install componentize-py==$VERSION"
# Debian's system Python refuses global installs without --break-system-packages (PEP 668).
python3 -m pip install --quiet --root-user-action=ignore "componentize-py==$VERSION" 2>/dev/null ||
    python3 -m pip install --quiet --root-user-action=ignore --break-system-packages "componentize-py==$VERSION"
command -v componentize-py >/dev/null 2>&1 || {
    echo "install-python: componentize-py installed but not on PATH ($(python3 -m site --user-base)/bin?)" >&2
    exit 1
}
echo "install-python: $(componentize-py --version)"
