#!/usr/bin/env bash
# An endpoint killed with `kill -9` under load, as an operator would try it: sluice (default
# settings, release build) in front of two loopback nginx origins (single-process, so
# `kill -9` really ends the server), DURATION seconds of load per protocol, origin `b` killed
# KILL_AT seconds in. Prints one row per protocol: requests, failures as the load generator
# counts them, non-2xx answers.
#
#   SLUICE_BIN=target/release/sluice bench/kill.sh          # DURATION=20 KILL_AT=5 CONNS=50
#   PROTOCOLS="h1 h2c" DURATION=10 bench/kill.sh
#
# Installs (as root) what it lacks: nginx, wrk, h2load (nghttp2-client), openssl, curl.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

DUR=${DURATION:-20}; DUR=${DUR%s}
KILL_AT=${KILL_AT:-5}
CONNS=${CONNS:-50}
PROTOCOLS=${PROTOCOLS:-h1 h2c h2}
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
[[ $SLUICE_BIN == /* ]] || SLUICE_BIN="$REPO_ROOT/$SLUICE_BIN"
[[ -x $SLUICE_BIN ]] || die "no sluice binary at $SLUICE_BIN (cargo build --release)"
[[ $DUR =~ ^[0-9]+$ && $KILL_AT =~ ^[0-9]+$ ]] && ((KILL_AT < DUR)) \
  || die "DURATION and KILL_AT must be whole seconds, KILL_AT < DURATION"
ensure_cmds nginx:nginx wrk:wrk h2load:nghttp2-client openssl:openssl curl:curl python3:python3

WORK=$(mktemp -d /tmp/sluice-kill.XXXXXX)
declare -A PID=()
cleanup() {
  for p in "${PID[@]}"; do stop_pid "$p"; done
  [[ ${KEEP_TMP:-0} == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT

read -r PORT_A PORT_B PORT_H PORT_S <<<"$(free_ports 4)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
mkdir -p "$WORK/www"
head -c 100 /dev/zero | tr '\0' 's' >"$WORK/www/small"

for o in a b; do
  port=PORT_${o^^}
  nginx_conf "origin-$o" 1 "server { listen 127.0.0.1:${!port}; location / { root $WORK/www; } }"
  sed -i '1i master_process off;' "$WORK/origin-$o/nginx.conf"
done
cat >"$WORK/sluice.toml" <<EOF
[[listener]]
address = "127.0.0.1:$PORT_H"

[[listener]]
address = "127.0.0.1:$PORT_S"
[listener.tls]
certificates = [{ cert = "$WORK/cert.pem", key = "$WORK/key.pem" }]

[[pool]]
name = "origin"
endpoints = [{ address = "127.0.0.1:$PORT_A" }, { address = "127.0.0.1:$PORT_B" }]

[proxy]
default_pool = "origin"

[log]
access_log = false
EOF

echo "| protocol | load | requests | failed (load generator) | non-2xx |"
echo "|---|---|---|---|---|"
for proto in $PROTOCOLS; do
  for o in a b; do
    start "origin-$o" nginx -c "$WORK/origin-$o/nginx.conf"
  done
  start sluice "$SLUICE_BIN" run --config "$WORK/sluice.toml"
  wait_ready origin-a "http://127.0.0.1:$PORT_A/small" || die "origin a did not start"
  wait_ready origin-b "http://127.0.0.1:$PORT_B/small" || die "origin b did not start"
  wait_ready sluice "http://127.0.0.1:$PORT_H/small" || die "sluice did not start"
  load_cmd "$proto" "$DUR" "$CONNS" "$PORT_H" "$PORT_S"
  cmd=("${LOAD_CMD[@]}")
  "${cmd[@]}" >"$WORK/load-$proto.txt" 2>&1 &
  load=$!
  sleep "$KILL_AT"
  kill -9 "${PID[origin-b]}"
  wait "$load" || true
  IFS="|" read -r total failed non2xx <<<"$(load_result "$proto" "$WORK/load-$proto.txt")"
  echo "| $proto | ${cmd[0]} ${CONNS} connections, ${DUR} s, kill -9 at ${KILL_AT} s | $total | $failed | $non2xx |"
  for n in sluice origin-a origin-b; do stop_pid "${PID[$n]}"; unset "PID[$n]"; done
done
