#!/usr/bin/env bash
# Reloads under load: sluice (release build, default settings, TLS listener, admin on) in
# front of two loopback nginx origins; during DURATION seconds of load per protocol it gets
# RELOADS SIGHUPs, each after the config file was edited (the pool's weights flip between
# 1/3 and 3/1), so every SIGHUP re-reads the config, reloads certificates and pools and
# re-checks the policy. Prints one row per protocol: requests, failures as the load generator
# counts them, non-2xx answers; and the reloads /metrics counted.
#
#   SLUICE_BIN=target/release/sluice bench/reload.sh     # DURATION=20 RELOADS=20 CONNS=50
#   PROTOCOLS="h1" bench/reload.sh
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
RELOADS=${RELOADS:-20}
CONNS=${CONNS:-50}
PROTOCOLS=${PROTOCOLS:-h1 h2}
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
[[ $SLUICE_BIN == /* ]] || SLUICE_BIN="$REPO_ROOT/$SLUICE_BIN"
[[ -x $SLUICE_BIN ]] || die "no sluice binary at $SLUICE_BIN (cargo build --release)"
[[ $DUR =~ ^[0-9]+$ && $RELOADS =~ ^[0-9]+$ ]] && ((RELOADS > 0 && DUR >= 4)) \
  || die "DURATION (>= 4) and RELOADS (> 0) must be whole numbers"
ensure_cmds nginx:nginx wrk:wrk h2load:nghttp2-client openssl:openssl curl:curl python3:python3

WORK=$(mktemp -d /tmp/sluice-reload.XXXXXX)
declare -A PID=()
cleanup() {
  for p in "${PID[@]}"; do stop_pid "$p"; done
  [[ ${KEEP_TMP:-0} == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT

read -r PORT_A PORT_B PORT_H PORT_S PORT_ADMIN <<<"$(free_ports 5)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
mkdir -p "$WORK/www"
head -c 100 /dev/zero | tr '\0' 's' >"$WORK/www/small"
for o in a b; do
  port=PORT_${o^^}
  nginx_conf "origin-$o" 1 "server { listen 127.0.0.1:${!port}; location / { root $WORK/www; } }"
done

# The config with weights $1 (endpoint a) and $2 (endpoint b); written to a temp file and
# renamed over, as deploy tools do.
write_config() {
  cat >"$WORK/sluice.toml.tmp" <<EOF
[[listener]]
address = "127.0.0.1:$PORT_H"

[[listener]]
name = "https"
address = "127.0.0.1:$PORT_S"
[listener.tls]
certificates = [{ cert = "$WORK/cert.pem", key = "$WORK/key.pem" }]

[[pool]]
name = "origin"
endpoints = [{ address = "127.0.0.1:$PORT_A", weight = $1 }, { address = "127.0.0.1:$PORT_B", weight = $2 }]

[proxy]
default_pool = "origin"

[admin]
address = "127.0.0.1:$PORT_ADMIN"

[log]
access_log = false
EOF
  mv "$WORK/sluice.toml.tmp" "$WORK/sluice.toml"
}

echo "| protocol | load | reloads (SIGHUP) | requests | failed (load generator) | non-2xx | reloads counted ok / failed |"
echo "|---|---|---|---|---|---|---|"
for proto in $PROTOCOLS; do
  for o in a b; do
    start "origin-$o" nginx -c "$WORK/origin-$o/nginx.conf"
  done
  write_config 1 1
  start sluice "$SLUICE_BIN" run --config "$WORK/sluice.toml"
  wait_ready origin-a "http://127.0.0.1:$PORT_A/small" || die "origin a did not start"
  wait_ready origin-b "http://127.0.0.1:$PORT_B/small" || die "origin b did not start"
  wait_ready sluice "http://127.0.0.1:$PORT_H/small" || die "sluice did not start"
  load_cmd "$proto" "$DUR" "$CONNS" "$PORT_H" "$PORT_S"
  cmd=("${LOAD_CMD[@]}")
  "${cmd[@]}" >"$WORK/load-$proto.txt" 2>&1 &
  load=$!
  # Reloads spread over the run, leaving its first and last second alone.
  gap=$(python3 -c "print(($DUR - 2) / $RELOADS)")
  sleep 1
  for ((i = 0; i < RELOADS; i++)); do
    if ((i % 2 == 0)); then write_config 3 1; else write_config 1 3; fi
    kill -HUP "${PID[sluice]}"
    sleep "$gap"
  done
  wait "$load" || true
  counted=$(curl -s "http://127.0.0.1:$PORT_ADMIN/metrics" \
    | awk '/^sluice_reloads_total\{what="config",outcome="ok"\}/ {ok=$2} /^sluice_reloads_total\{what="config",outcome="failed"\}/ {f=$2} END {print ok " / " f}')
  IFS="|" read -r total failed non2xx <<<"$(load_result "$proto" "$WORK/load-$proto.txt")"
  echo "| $proto | ${cmd[0]} ${CONNS} connections, ${DUR} s | $RELOADS | $total | $failed | $non2xx | $counted |"
  for n in sluice origin-a origin-b; do stop_pid "${PID[$n]}"; unset "PID[$n]"; done
done
