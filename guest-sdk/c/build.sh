#!/usr/bin/env bash
# Builds a C sluice policy into a core wasm module (step 2 of 3 of `sluice policy build`).
#
# Run by the sluice binary, which has already generated the C bindings of both worlds
# (step 1) and afterwards makes the component from $OUT (step 3, wit-component with the
# wasi_snapshot_preview1 reactor adapter). For development without the sluice binary see
# dev-build.sh.
#
# Env (all required):
#   SLUICE_WIT         directory with policy.wit (unused here: the bindings already say it all)
#   SLUICE_SDK         directory with the files in FILES (sluice.h, sluice.c, this script)
#   SLUICE_C_BINDINGS  directory with policy/ and responder/, each what
#                      `wit-bindgen c --world <world>` writes (<world>.h, <world>.c,
#                      <world>_component_type.o)
#   SRC                the policy directory: policy.c (and any other *.c / *.h beside it)
#   OUT                the core module to write; $OUT.world gets the world name
#   WORK               scratch directory
# Optional: SLUICE_CFLAGS (extra clang flags, e.g. -DDEBUG), CC (the clang to use),
#           WASI_SYSROOT (a wasi-sysroot, e.g. wasi-sdk's, instead of Debian's wasi-libc).
#
# World: `responder` when the compiled policy objects define an external symbol
# `sluice_on_response` (read with llvm-nm; without llvm-nm, with a wasm-ld probe), else
# `policy`. The symbol is what counts, so comments, #if 0 and macros cannot mislead it.
#
# Exit status: 0 ok, 1 the compiler or linker failed (its messages are shown), 2 bad
# invocation, 3 a tool is missing (one line naming the Debian package).
set -uo pipefail

die() { echo "sluice c build: $1" >&2; exit "${2:-1}"; }
missing() { echo "$1" >&2; exit 3; }

for v in SLUICE_SDK SLUICE_C_BINDINGS SRC OUT WORK; do
  [[ -n ${!v:-} ]] || die "$v is not set (this script is run by \`sluice policy build\`; for development use guest-sdk/c/dev-build.sh)" 2
done
[[ -f $SRC/policy.c ]] || die "$SRC/policy.c not found: a C policy directory has policy.c" 2

# ------------------------------------------------------------------ toolchain
CC=${CC:-}
if [[ -z $CC ]]; then
  for c in clang clang-14 clang-15 clang-16 clang-17 clang-18 clang-19; do
    command -v "$c" >/dev/null 2>&1 && { CC=$c; break; }
  done
fi
[[ -n $CC ]] && command -v "$CC" >/dev/null 2>&1 \
  || missing "clang not found: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32"

TARGET=(--target=wasm32-wasi)
if [[ -n ${WASI_SYSROOT:-} ]]; then
  TARGET+=("--sysroot=$WASI_SYSROOT")
fi
# Debian's clang already searches /usr/include/wasm32-wasi and /usr/lib/wasm32-wasi for
# --target=wasm32-wasi (its multiarch layout); these checks only turn a missing package into
# one clear line.
ld=$("$CC" "${TARGET[@]}" -print-prog-name=wasm-ld 2>/dev/null)
[[ $ld == /* && -x $ld ]] || command -v "$ld" >/dev/null 2>&1 \
  || missing "wasm-ld not found: apt-get install lld"
crt=$("$CC" "${TARGET[@]}" -print-file-name=crt1-reactor.o 2>/dev/null)
[[ $crt == /* && -f $crt ]] \
  || missing "wasi-libc not found (no crt1-reactor.o for wasm32-wasi): apt-get install wasi-libc"
rt=$("$CC" "${TARGET[@]}" -rtlib=compiler-rt -print-libgcc-file-name 2>/dev/null)
[[ -f $rt ]] \
  || missing "compiler-rt for wasm32 not found ($rt): apt-get install libclang-rt-dev-wasm32"

NM=
for n in llvm-nm llvm-nm-14 llvm-nm-15 llvm-nm-16 llvm-nm-17 llvm-nm-18 llvm-nm-19; do
  command -v "$n" >/dev/null 2>&1 && { NM=$n; break; }
done

rm -f "$OUT" "$OUT.world"
SDK=$SLUICE_SDK
B=$SLUICE_C_BINDINGS
O=$WORK/c
rm -rf "$O" && mkdir -p "$O" || die "cannot create $O" 2

CFLAGS=(-O2 -Wall -Wno-unused-function -I"$SDK" -I"$SRC")
# shellcheck disable=SC2206
EXTRA=(${SLUICE_CFLAGS:-})

# ------------------------------------------------------------------ the policy's sources
shopt -s nullglob
sources=("$SRC"/*.c)
objs=()
for s in "${sources[@]}"; do
  o=$O/policy_$(basename "${s%.c}").o
  "$CC" "${TARGET[@]}" "${CFLAGS[@]}" "${EXTRA[@]}" -c "$s" -o "$o" || exit 1
  objs+=("$o")
done

# ------------------------------------------------------------------ which world
world=policy
if [[ -n $NM ]]; then
  defined=$("$NM" --defined-only --extern-only "${objs[@]}" 2>/dev/null)
  grep -Eq '^[0-9a-fA-F]* *[TW] sluice_decide$' <<<"$defined" \
    || die "the policy defines no sluice_decide: policy.c needs \`sluice_decision *sluice_decide(void) { ... }\` (see sluice.h)"
  grep -Eq '^[0-9a-fA-F]* *[TW] sluice_on_response$' <<<"$defined" && world=responder
else
  "$ld" --no-entry --allow-undefined --strip-all --export-if-defined=sluice_on_response \
    -o "$O/probe.wasm" "${objs[@]}" 2>/dev/null \
    && grep -q sluice_on_response "$O/probe.wasm" && world=responder
fi
for f in "$world.h" "$world.c" "${world}_component_type.o"; do
  [[ -f $B/$world/$f ]] || die "bindings incomplete: $B/$world/$f missing" 2
done

# ------------------------------------------------------------------ SDK, bindings, link
DEFS=()
[[ $world == responder ]] && DEFS=(-DSLUICE_RESPONDER)
"$CC" "${TARGET[@]}" -O2 -Wall -I"$SDK" -I"$B/$world" "${DEFS[@]}" \
  -c "$SDK/sluice.c" -o "$O/sluice.o" || exit 1
"$CC" "${TARGET[@]}" -O2 -I"$B/$world" -c "$B/$world/$world.c" -o "$O/bindings.o" || exit 1

mkdir -p "$(dirname "$OUT")" || die "cannot create $(dirname "$OUT")" 2
"$CC" "${TARGET[@]}" -mexec-model=reactor -O2 "${EXTRA[@]}" \
  "${objs[@]}" "$O/sluice.o" "$O/bindings.o" "$B/$world/${world}_component_type.o" \
  -Wl,--strip-debug -o "$OUT" || exit 1
echo "$world" > "$OUT.world"
