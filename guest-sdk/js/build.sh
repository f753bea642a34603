#!/usr/bin/env bash
# Builds a sluice JavaScript policy into a WebAssembly component.
#
#   SLUICE_WIT=<dir with policy.wit> SLUICE_SDK=<dir with the files in FILES> \
#   SRC=<policy dir> OUT=<component.wasm> WORK=<scratch dir> build.sh
#
# SRC has policy.js (`export function decide(req)`, optionally `export function
# onResponse(req, resp)`), importing the SDK as "sluice". World `responder` is picked when it
# exports onResponse, else `policy`.
#
# Tools (Node.js >= 20.19 and the npm packages @bytecodealliance/componentize-js and rolldown)
# are looked up, per package, in: $SLUICE_JS_NODE_MODULES (colon-separated node_modules
# directories), $SRC/node_modules (the template's package.json lists them: `npm install` in
# the policy directory), then the global node_modules (`npm root -g`).
#
# SLUICE_JS_ENGINE=qjs builds with componentize-qjs (QuickJS) instead of componentize-js
# (StarlingMonkey): a component of about 1 MiB instead of 12 MiB; see README.md.
#
# Exit status: 0 built, 1 build error (reported on stderr), 2 usage, 3 a tool is missing.
set -euo pipefail

for v in SLUICE_WIT SLUICE_SDK SRC OUT WORK; do
    if [ -z "${!v:-}" ]; then
        echo "build.sh: $v is not set (needs SLUICE_WIT, SLUICE_SDK, SRC, OUT, WORK)" >&2
        exit 2
    fi
done
[ -f "$SLUICE_WIT/policy.wit" ] || { echo "build.sh: no policy.wit in SLUICE_WIT=$SLUICE_WIT" >&2; exit 2; }
[ -f "$SLUICE_SDK/sluice.js" ] || { echo "build.sh: no sluice.js in SLUICE_SDK=$SLUICE_SDK" >&2; exit 2; }
[ -d "$SRC" ] || { echo "build.sh: SRC=$SRC is not a directory" >&2; exit 2; }

INSTALL="npm install -g @bytecodealliance/componentize-js@0.23.0 rolldown@1.3.4"

if ! command -v node >/dev/null 2>&1; then
    echo "node not found: install Node.js 20.19 or later (with npm), then: $INSTALL" >&2
    exit 3
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
    echo "node $(node --version) is too old: rolldown needs Node.js 20.19 or later" >&2
    exit 3
fi

engine=${SLUICE_JS_ENGINE:-starlingmonkey}
case "$engine" in
    qjs|quickjs) componentizer=componentize-qjs; install_one="npm install -g componentize-qjs@0.4.5" ;;
    starlingmonkey|sm) componentizer=@bytecodealliance/componentize-js; install_one="$INSTALL" ;;
    *) echo "build.sh: SLUICE_JS_ENGINE=$engine: expected starlingmonkey (default) or qjs" >&2; exit 2 ;;
esac

search=()
if [ -n "${SLUICE_JS_NODE_MODULES:-}" ]; then
    IFS=: read -r -a extra <<<"$SLUICE_JS_NODE_MODULES"
    search+=("${extra[@]}")
fi
search+=("$SRC/node_modules")
if command -v npm >/dev/null 2>&1; then
    global=$(npm root -g 2>/dev/null || true)
    [ -n "$global" ] && search+=("$global" "$global/@bytecodealliance/componentize-js/node_modules")
fi
search+=(/usr/local/lib/node_modules /usr/lib/node_modules)

find_pkg() {
    local d
    for d in "${search[@]}"; do
        if [ -f "$d/$1/package.json" ]; then
            echo "$d/$1"
            return 0
        fi
    done
    return 1
}

mkdir -p "$WORK/node_modules/@bytecodealliance"
for pkg in rolldown "$componentizer"; do
    if ! found=$(find_pkg "$pkg"); then
        case "$pkg" in
            rolldown) echo "rolldown not found: $INSTALL" >&2 ;;
            *) echo "$pkg not found: $install_one" >&2 ;;
        esac
        exit 3
    fi
    ln -sfn "$found" "$WORK/node_modules/$pkg"
done

cp "$SLUICE_SDK/build.mjs" "$WORK/build.mjs"
export SLUICE_WIT SLUICE_SDK SRC OUT WORK SLUICE_JS_ENGINE="$engine"
exec node "$WORK/build.mjs"
