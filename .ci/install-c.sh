#!/usr/bin/env bash
# Installs the C policy toolchain for `sluice policy build` (guest-sdk/c/build.sh): Debian 12's
# clang 14 and lld 14 (wasm-ld) with wasi-libc and compiler-rt for wasm32, plus llvm (llvm-nm,
# which build.sh uses to see whether the policy defines sluice_on_response; without it
# build.sh falls back to a wasm-ld probe). Verified: clang 1:14.0.6-12, lld 1:14.0.6-12,
# wasi-libc 0.0~git20220510.9886d3d-2, libclang-rt-14-dev-wasm32 1:14.0.6-12 (Debian 12).
# The bindings and the component step are done by the sluice binary: no Rust tools needed.
# Idempotent: does nothing when everything is there. Run as root on Debian 12.
set -euo pipefail

PACKAGES=(clang lld wasi-libc libclang-rt-dev-wasm32 llvm)

have_all() {
    command -v clang >/dev/null 2>&1 || return 1
    local ld crt rt
    ld=$(clang --target=wasm32-wasi -print-prog-name=wasm-ld 2>/dev/null) || return 1
    [[ $ld == /* && -x $ld ]] || command -v "$ld" >/dev/null 2>&1 || return 1
    crt=$(clang --target=wasm32-wasi -print-file-name=crt1-reactor.o 2>/dev/null) || return 1
    [[ $crt == /* && -f $crt ]] || return 1
    rt=$(clang --target=wasm32-wasi -rtlib=compiler-rt -print-libgcc-file-name 2>/dev/null) || return 1
    [[ -f $rt ]] || return 1
    command -v llvm-nm >/dev/null 2>&1 || return 1
}

if have_all; then
    echo "install-c: clang $(clang -dumpversion), wasm-ld, wasi-libc, compiler-rt wasm32 and llvm-nm present"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || {
    echo "install-c: no apt-get; install ${PACKAGES[*]} (Debian names) yourself" >&2
    exit 1
}
echo "install-c: apt-get install ${PACKAGES[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
have_all || { echo "install-c: the C toolchain is still incomplete after apt-get" >&2; exit 1; }
echo "install-c: clang $(clang -dumpversion) ready for wasm32-wasi"
