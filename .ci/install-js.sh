#!/usr/bin/env bash
# Installs the JavaScript policy toolchain for `sluice policy build` (guest-sdk/js/build.sh):
# ComponentizeJS (StarlingMonkey) and rolldown (the bundler), plus componentize-qjs (QuickJS,
# the optional SLUICE_JS_ENGINE=qjs), as global npm packages at versions verified with
# sluice:policy@0.3.0. Needs Node.js >= 20.19 (rolldown). Idempotent; run as root on Debian 12.
set -euo pipefail

PACKAGES=(
    "@bytecodealliance/componentize-js@0.23.0"
    "rolldown@1.3.4"
    "componentize-qjs@0.4.5"
)

node_ok() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
        node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'
}

if ! node_ok; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "install-js: Node.js >= 20.19 with npm not found; trying apt-get install nodejs npm"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    if ! node_ok; then
        echo "install-js: need Node.js >= 20.19 and npm (found: $(node --version 2>/dev/null || echo none)); Debian 12's nodejs is 18" >&2
        exit 1
    fi
fi

root=$(npm root -g)
missing=()
for spec in "${PACKAGES[@]}"; do
    name=${spec%@*}
    want=${spec##*@}
    have=$(node -p "try { require('$root/$name/package.json').version } catch { '' }" 2>/dev/null || true)
    if [ "$have" != "$want" ]; then
        missing+=("$spec")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-js: already installed in $root: ${PACKAGES[*]}"
else
    echo "install-js: npm install -g ${missing[*]}"
    npm install -g --no-audit --no-fund --loglevel=error "${missing[@]}"
fi
echo "install-js: node $(node --version), npm $(npm --version), packages in $root"
