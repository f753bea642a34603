#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ for FUZZ_SECONDS each (default 60) on nightly with
# cargo-fuzz, installing both when missing. A crash stops the run; its input is under
# fuzz/artifacts/<target>/, to be fixed with a regression test (host/src/fuzz.rs runs each
# target over seeds and mutations in the normal suite, on stable).
#
#   fuzz/run.sh                       # all targets, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh vary # one target, longer
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${FUZZ_SECONDS:-60}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo +nightly fuzz list)
for t in "${targets[@]}"; do
  echo "== $t (${SECONDS_EACH}s)"
  cargo +nightly fuzz run "$t" -- -max_total_time="$SECONDS_EACH" -max_len=4096
done
