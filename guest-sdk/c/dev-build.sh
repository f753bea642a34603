#!/usr/bin/env bash
# DEVELOPMENT ONLY: builds a C policy without `sluice policy build`, doing its three steps
# with the command-line tools instead of the crates the sluice binary uses. Not embedded in
# the binary, not needed by users.
#
#   guest-sdk/c/dev-build.sh DIR          # -> DIR/build/policy.wasm
#
# Needs (outside the repo):
#   wit-bindgen 0.63.0  and  wasm-tools:
#     CARGO_TARGET_DIR=/tmp/ctools-target cargo install --locked --root /tmp/ctools \
#       wit-bindgen-cli@0.63.0 wasm-tools
#   the WASI preview 1 reactor adapter matching wasmtime 48 (crate
#   wasi-preview1-component-adapter-provider 48.0.8, file artefacts/wasi_snapshot_preview1.reactor.wasm)
# Env: WIT_BINDGEN, WASM_TOOLS (default: PATH, then /tmp/ctools/bin), ADAPTER (default: the
#      newest 48.x in ~/.cargo/registry, or /tmp/ctools/share/wasi_snapshot_preview1.reactor.wasm).
set -euo pipefail

[[ $# -eq 1 && -d $1 ]] || { echo "usage: $0 POLICY_DIR" >&2; exit 2; }
DIR=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WIT=$(cd "$HERE/../../wit" && pwd)

tool() {
  local v=$1 name=$2
  if [[ -n ${!v:-} ]]; then echo "${!v}"; return; fi
  command -v "$name" 2>/dev/null || { [[ -x /tmp/ctools/bin/$name ]] && echo "/tmp/ctools/bin/$name"; } \
    || { echo "$name not found (see the top of $0)" >&2; exit 3; }
}
WB=$(tool WIT_BINDGEN wit-bindgen)
WT=$(tool WASM_TOOLS wasm-tools)
if [[ -z ${ADAPTER:-} ]]; then
  ADAPTER=$(ls -d ~/.cargo/registry/src/*/wasi-preview1-component-adapter-provider-48.*/artefacts/wasi_snapshot_preview1.reactor.wasm 2>/dev/null | sort -V | tail -1 || true)
  [[ -n $ADAPTER ]] || ADAPTER=/tmp/ctools/share/wasi_snapshot_preview1.reactor.wasm
fi
[[ -f $ADAPTER ]] || { echo "adapter not found: $ADAPTER (set ADAPTER)" >&2; exit 3; }

WORK=$DIR/build/.sluice-dev
rm -rf "$WORK"; mkdir -p "$WORK/bindings"

# Step 1 (the sluice binary: wit-bindgen-c crate in-process).
for world in policy responder; do
  out=$("$WB" c --world "$world" "$WIT" --out-dir "$WORK/bindings/$world" 2>&1) || { echo "$out" >&2; exit 1; }
done

# Step 2 (the embedded build.sh, as the sluice binary runs it).
CORE=$DIR/build/policy.core.wasm
SLUICE_WIT=$WIT SLUICE_SDK=$HERE SLUICE_C_BINDINGS=$WORK/bindings SRC=$DIR OUT=$CORE WORK=$WORK \
  bash "$HERE/build.sh"

# Step 3 (the sluice binary: wit-component crate with the adapter from the provider crate).
"$WT" component new "$CORE" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$DIR/build/policy.wasm"
"$WT" validate "$DIR/build/policy.wasm"
echo "$DIR/build/policy.wasm ($(cat "$CORE.world"), $(stat -c %s "$DIR/build/policy.wasm") bytes)"
