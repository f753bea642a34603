#!/usr/bin/env bash
# Hot swap: time from `PUT /policy` to the 200 (sent once the new revision is published, i.e.
# after compile or cache load, import/export checks, pre-instantiation and the three rehearsal
# requests) against a running `sluice run` (release build).
#
# Per round: a new proxy with an empty compiled-artifact cache (SLUICE_CACHE_DIR = a new temp
# dir), then for each component: PUT (cold: compiled by Cranelift), POST /policy/rollback,
# PUT the same bytes again (warm: wasmtime's cache turns the compile into a deserialize),
# POST /policy/rollback. Figures are medians over rounds. See bench/RESULTS.md ("Step 2").
#
#   bench/hotswap.sh                 # ROUNDS=5, components: big (1.1 MB) and swap-a (58 KB)
#
# Env: ROUNDS (5), COMPONENTS ("big swap-a": test guests, built to
#      target/wasm-guests/wasm32-wasip2/guest/<name>.wasm by the sluice-tests build; or
#      NAME=PATH for any component, e.g. `py=examples/path-routing-py/build/policy.wasm`),
#      SLUICE_BIN (default: build target/release/sluice with cargo first), KEEP_TMP=1,
#      MEMORY (the policy memory cap, default 16MiB; interpreters need more).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
ROUNDS=${ROUNDS:-5}
COMPONENTS=${COMPONENTS:-big swap-a}
[[ $ROUNDS =~ ^[0-9]+$ ]] || { echo "ROUNDS must be a whole number" >&2; exit 2; }

. "$BENCH_DIR/lib.sh"
for c in curl python3; do command -v "$c" >/dev/null || die "missing $c"; done

if [[ -z ${SLUICE_BIN:-} ]]; then
  log "building target/release/sluice (cargo build --release -p sluice)"
  (cd "$REPO_ROOT" && cargo build --release -p sluice --locked 2>&1 | tail -1) >&2
  SLUICE_BIN=target/release/sluice
fi
[[ $SLUICE_BIN == /* ]] || SLUICE_BIN="$REPO_ROOT/$SLUICE_BIN"
[[ -x $SLUICE_BIN ]] || die "no executable at $SLUICE_BIN"

GUEST_DIR="$REPO_ROOT/target/wasm-guests/wasm32-wasip2/guest"
declare -A WASM=()
for c in $COMPONENTS; do
  # NAME=PATH names a component built elsewhere (e.g. by `sluice policy build`).
  if [[ $c == *=* ]]; then WASM[${c%%=*}]="${c#*=}"; continue; fi
  WASM[$c]="$GUEST_DIR/${c//-/_}.wasm"
  if [[ ! -f ${WASM[$c]} ]]; then
    log "building the test guests (cargo build -p sluice-tests: its build script builds every guest)"
    (cd "$REPO_ROOT" && cargo build -p sluice-tests --locked 2>&1 | tail -1) >&2
  fi
  [[ -f ${WASM[$c]} ]] || die "no component ${WASM[$c]}"
done
NAMES=(); for c in $COMPONENTS; do NAMES+=("${c%%=*}"); done

build_running && log "WARNING: a build (cargo/rustc/cc) is running: it competes for the 2 cores and skews every figure"
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
REV="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo no-commit)$(cd "$REPO_ROOT" && git diff --quiet HEAD -- host 2>/dev/null || echo '+uncommitted host/ changes')"
STAMP=$(date +%Y%m%d-%H%M%S)
OUT="$BENCH_DIR/out/hotswap-$STAMP"; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/sluice-hotswap.XXXXXX)
CSV="$OUT/runs.csv"
PID=""

stop_proxy() { # only the process this script started
  [[ -n $PID ]] || return 0
  kill -TERM "$PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}
cleanup() {
  stop_proxy
  cp "$WORK"/*.log "$OUT"/ 2>/dev/null || true
  [[ ${KEEP_TMP:-0} == 1 ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r PORT ADMIN < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
# The pool is never contacted: no traffic is sent, and the rehearsal only decides.
cat >"$WORK/sluice.toml" <<EOF
[[listener]]
address = "127.0.0.1:$PORT"

[[pool]]
name = "origin"
endpoints = [{ address = "127.0.0.1:9" }]

# The pools the examples route to (path-routing: api, static; sticky-ab: ab).
[[pool]]
name = "api"
endpoints = [{ address = "127.0.0.1:9" }]

[[pool]]
name = "static"
endpoints = [{ address = "127.0.0.1:9" }]

[[pool]]
name = "ab"
endpoints = [{ address = "127.0.0.1:9" }]

[proxy]
default_pool = "origin"

[admin]
address = "127.0.0.1:$ADMIN"

[log]
level = "info"
access_log = false

[policy]
memory = "${MEMORY:-16MiB}"
EOF

A="http://127.0.0.1:$ADMIN"
# `Expect:` (empty) stops curl from waiting for a `100 Continue` before a large body.
put() { # component -> "status seconds"
  curl -s --max-time 120 -o "$WORK/put.json" -w '%{http_code} %{time_total}\n' -X PUT \
    --data-binary "@${WASM[$1]}" -H 'content-type: application/wasm' -H 'Expect:' "$A/policy"
}
rollback() {
  local code; code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X POST "$A/policy/rollback")
  [[ $code == 200 ]] || die "rollback answered $code"
}

echo "round,component,bytes,cache,status,seconds,build_running" >"$CSV"
for ((round = 1; round <= ROUNDS; round++)); do
  export SLUICE_CACHE_DIR="$WORK/cache-$round"    # empty: nothing compiled yet
  "$SLUICE_BIN" run --config "$WORK/sluice.toml" >"$WORK/sluice-$round.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do   # bounded: 10 s
    kill -0 "$PID" 2>/dev/null || die "sluice exited (log: $OUT/sluice-$round.log)"
    curl -fs -o /dev/null --max-time 1 "$A/health" && break
    sleep 0.1
  done
  curl -fs -o /dev/null --max-time 1 "$A/health" || die "sluice admin not ready"
  for c in "${NAMES[@]}"; do
    for cache in cold warm; do
      busy=0; if build_running; then busy=1; fi
      read -r code secs < <(put "$c")
      if build_running; then busy=1; fi
      [[ $code == 200 ]] || die "PUT $c ($cache) answered $code: $(cat "$WORK/put.json")"
      echo "$round,$c,$(stat -c %s "${WASM[$c]}"),$cache,$code,$secs,$busy" >>"$CSV"
      log "r$round $c $cache: $code in $(awk -v s="$secs" 'BEGIN{printf "%.1f ms", s * 1000}')$( ((busy)) && echo '  BUILD RUNNING')"
      rollback
    done
  done
  stop_proxy
done

{
  echo "### Run $STAMP"
  echo
  echo "- command: \`ROUNDS=$ROUNDS bench/hotswap.sh\` (components: $COMPONENTS)"
  echo "- sluice: $SLUICE_BIN, HEAD $REV, built $(date -r "$SLUICE_BIN" '+%F %T')"
  echo "- load average before: $LOADAVG; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- time = curl's \`time_total\` for \`PUT /policy\` (upload over loopback + build + rehearsal + publish)"
  echo
  python3 - "$CSV" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("| component | size | cache | median | min | max | runs | runs during a build |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for c in dict.fromkeys(r["component"] for r in rows):
    for cache in ("cold", "warm"):
        rs = [r for r in rows if r["component"] == c and r["cache"] == cache]
        ms = [float(r["seconds"]) * 1000 for r in rs]
        print(f"| {c} | {int(rs[0]['bytes']):,} B | {cache} | {statistics.median(ms):.1f} ms | {min(ms):.1f} ms | "
              f"{max(ms):.1f} ms | {len(rs)} | {sum(int(r['build_running']) for r in rs)} |")
EOF
} | tee "$OUT/results.md"
log "raw figures: $CSV"
