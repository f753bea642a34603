#!/usr/bin/env bash
# Reloads under load: sluice (release build, default settings, TLS listener, admin on) in
# front of two loopback nginx origins; during DURATION seconds of load per protocol it gets
# RELOADS SIGHUPs, each after the config file was edited: the pool's weights flip between
# 1/3 and 3/1, a third listener comes and goes, the HTTPS listener's certificate files,
# `[proxy] via_name`, `[timeouts] client_idle`, `[limits] max_connections` and the cache's
# capacity alternate. So every SIGHUP applies a whole new config to the listeners the load
# runs on. Prints one row per protocol: requests, failures as the load generator counts
# them, non-2xx answers, the reloads /metrics counted, and probes of the third listener
# after each reload that added it.
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

read -r PORT_A PORT_B PORT_H PORT_S PORT_ADMIN PORT_X <<<"$(free_ports 6)"
for c in 0 1; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$WORK/key$c.pem" -out "$WORK/cert$c.pem" 2>/dev/null
done
mkdir -p "$WORK/www"
head -c 100 /dev/zero | tr '\0' 's' >"$WORK/www/small"
for o in a b; do
  port=PORT_${o^^}
  nginx_conf "origin-$o" 1 "server { listen 127.0.0.1:${!port}; location / { root $WORK/www; } }"
done

# The config of phase $1 (0 or 1): weights 1/3 or 3/1, the third listener off or on, and
# the other settings flipped. Written to a temp file and renamed over, as deploy tools do.
write_config() {
  local p=$1 extra=""
  ((p == 0)) || extra="[[listener]]
name = \"extra\"
address = \"127.0.0.1:$PORT_X\""
  cat >"$WORK/sluice.toml.tmp" <<EOF
[[listener]]
address = "127.0.0.1:$PORT_H"

[[listener]]
name = "https"
address = "127.0.0.1:$PORT_S"
[listener.tls]
certificates = [{ cert = "$WORK/cert$p.pem", key = "$WORK/key$p.pem" }]

$extra

[[pool]]
name = "origin"
endpoints = [{ address = "127.0.0.1:$PORT_A", weight = $((1 + 2 * p)) }, { address = "127.0.0.1:$PORT_B", weight = $((3 - 2 * p)) }]

[proxy]
default_pool = "origin"
via_name = "phase$p"

[timeouts]
client_idle = "$((60 + p))s"

[limits]
max_connections = $((10000 + p))

[cache]
capacity = "$((64 >> p)) MiB"

[admin]
address = "127.0.0.1:$PORT_ADMIN"

[log]
access_log = false
EOF
  mv "$WORK/sluice.toml.tmp" "$WORK/sluice.toml"
}

echo "| protocol | load | reloads (SIGHUP) | requests | failed (load generator) | non-2xx | reloads counted ok / failed | third listener probes ok |"
echo "|---|---|---|---|---|---|---|---|"
for proto in $PROTOCOLS; do
  for o in a b; do
    start "origin-$o" nginx -c "$WORK/origin-$o/nginx.conf"
  done
  write_config 0
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
  probes=0 probed=0
  for ((i = 0; i < RELOADS; i++)); do
    phase=$(((i + 1) % 2))
    write_config "$phase"
    kill -HUP "${PID[sluice]}"
    sleep "$gap"
    if ((phase == 1)); then
      probed=$((probed + 1))
      if curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$PORT_X/small"; then
        probes=$((probes + 1))
      fi
    fi
  done
  wait "$load" || true
  counted=$(curl -s "http://127.0.0.1:$PORT_ADMIN/metrics" \
    | awk '/^sluice_reloads_total\{what="config",outcome="ok"\}/ {ok=$2} /^sluice_reloads_total\{what="config",outcome="failed"\}/ {f=$2} END {print ok " / " f}')
  IFS="|" read -r total failed non2xx <<<"$(load_result "$proto" "$WORK/load-$proto.txt")"
  echo "| $proto | ${cmd[0]} ${CONNS} connections, ${DUR} s | $RELOADS | $total | $failed | $non2xx | $counted | $probes / $probed |"
  for n in sluice origin-a origin-b; do stop_pid "${PID[$n]}"; unset "PID[$n]"; done
done
