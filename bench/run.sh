#!/usr/bin/env bash
# Whole-proxy load benchmark: nginx vs HAProxy vs sluice, all in front of the
# same loopback nginx origin.  See bench/README.md.  Cache hits: bench/cache.sh.
#
#   bench/run.sh                          # defaults: DURATION=10s ROUNDS=3
#   DURATION=3s ROUNDS=1 bench/run.sh     # quick smoke run
#
# Env: DURATION (seconds, "10" or "10s"), ROUNDS, PROXIES ("nginx haproxy sluice"),
#      SCENARIOS ("small 16k 1m newconn latency https h2"), CONNS (50),
#      CONNS_1M (8), THREADS (2), WARMUP (2s), PAUSE (1s between runs),
#      SLUICE_BIN (target/release/sluice, relative to the repo root), KEEP_TMP=1,
#      SLUICE_EXTRA (TOML appended to sluice's config, e.g. $'[policy]\nnative = true'),
#      SLUICE_POOL_EXTRA (keys added to sluice's pool table, e.g. 'retries = 0').
# Output: markdown tables on stdout and in bench/out/<stamp>/results.md, raw
#         per-run figures in bench/out/<stamp>/runs.csv, process logs alongside.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
DUR_S=${DURATION:-10}; DUR_S=${DUR_S%s}
ROUNDS=${ROUNDS:-3}
PROXIES=${PROXIES:-nginx haproxy sluice}
SCENARIOS=${SCENARIOS:-small 16k 1m newconn latency https h2}
CONNS=${CONNS:-50}; CONNS_1M=${CONNS_1M:-8}; THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}; WARMUP=${WARMUP%s}; PAUSE=${PAUSE:-1}
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
[[ $SLUICE_BIN == /* ]] || SLUICE_BIN="$REPO_ROOT/$SLUICE_BIN"
[[ $DUR_S =~ ^[0-9]+$ && $WARMUP =~ ^[0-9]+$ ]] || { echo "DURATION/WARMUP must be whole seconds" >&2; exit 2; }

. "$BENCH_DIR/lib.sh"

# ---------------------------------------------------------------- prerequisites
ensure_cmds nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client openssl:openssl curl:curl python3:python3

# ------------------------------------------------------- work dirs and cleanup
T0=$SECONDS
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
SLUICE_REV="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo no-commit) at start; binary built $(date -r "$SLUICE_BIN" '+%F %T' 2>/dev/null || echo '?')"
BUSY=0   # timed runs that overlapped a build on this machine
if build_running; then
  log "WARNING: a build (cargo/rustc/cc) is running: it competes for the 2 cores and skews every figure"
fi
STAMP=$(date +%Y%m%d-%H%M%S)
OUT="$BENCH_DIR/out/$STAMP"; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX); chmod 755 "$WORK"
CSV="$OUT/runs.csv"
declare -A PID=() PORT=() PORTS=()   # per target: pid, cleartext port, TLS port

cleanup() {
  stop_started
  cp "$WORK"/*.log "$OUT"/ 2>/dev/null || true
  if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ ports, cert, files
read -r "PORT[direct]" "PORT[nginx]" "PORTS[nginx]" "PORT[haproxy]" "PORTS[haproxy]" "PORT[sluice]" "PORTS[sluice]" < <(free_ports 7)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"   # HAProxy wants both in one file

mkdir -p "$WORK/www"
head -c 100 /dev/zero | tr '\0' 's' >"$WORK/www/small"
head -c 16384 /dev/urandom >"$WORK/www/16k"
head -c 1048576 /dev/urandom >"$WORK/www/1m"
declare -A SIZE=([small]=100 [16k]=16384 [1m]=1048576)

# ------------------------------------------------------------------ configs
# nginx_conf (lib.sh): the common nginx preamble (origin and proxy): foreground, private pid/temp dirs.
# stub_status lets us count the TCP connections the origin accepted during a run.
nginx_conf origin 1 "  server { listen 127.0.0.1:${PORT[direct]}; root $WORK/www; location / { }
    location = /_status { stub_status; } }"

# keepalive 512 idle upstream conns per worker: >= the 500 requests in flight in the h2
# scenario, so nginx does not churn upstream connections. proxy_max_temp_file_size 0:
# buffer in memory only, never spill 1 MiB bodies to disk.
nginx_conf nginx 2 "
  upstream origin { server 127.0.0.1:${PORT[direct]}; keepalive 512; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${PORT[nginx]};
    listen 127.0.0.1:${PORTS[nginx]} ssl http2;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;  # nginx < 1.23.4 leaves TLSv1.3 out by default
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_max_temp_file_size 0;
    }
  }"

cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  bind 127.0.0.1:${PORTS[haproxy]} ssl crt $WORK/haproxy.pem alpn h2,http/1.1
  default_backend origin
backend origin
  server o1 127.0.0.1:${PORT[direct]}
EOF

cat >"$WORK/sluice.toml" <<EOF
[[listener]]
address = "127.0.0.1:${PORT[sluice]}"

[[listener]]
address = "127.0.0.1:${PORTS[sluice]}"
[listener.tls]
certificates = [{ cert = "$WORK/cert.pem", key = "$WORK/key.pem" }]

[[pool]]
name = "origin"
endpoints = [{ address = "127.0.0.1:${PORT[direct]}" }]
${SLUICE_POOL_EXTRA:-}

[proxy]
default_pool = "origin"

[log]
level = "warn"
access_log = false

${SLUICE_EXTRA:-}
EOF

# ------------------------------------------------------------ start processes
# start (lib.sh) records the PID of the exec'd process itself.
start direct nginx -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf"
wait_ready direct "http://127.0.0.1:${PORT[direct]}/small" || die "origin nginx did not start"

TARGETS=()
for p in $PROXIES; do
  case $p in
    nginx)   start nginx nginx -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" ;;
    haproxy) start haproxy haproxy -db -f "$WORK/haproxy.cfg" ;;
    sluice)  if [[ ! -x $SLUICE_BIN ]]; then
               log "SKIPPING sluice: no executable at $SLUICE_BIN (build with cargo build --release, or set SLUICE_BIN)"
               continue
             fi
             start sluice "$SLUICE_BIN" run --config "$WORK/sluice.toml" ;;
    *) die "unknown proxy $p" ;;
  esac
  # shellcheck disable=SC2015  # the log-and-continue block runs if either check fails
  wait_ready "$p" "http://127.0.0.1:${PORT[$p]}/small" && wait_ready "$p" "https://127.0.0.1:${PORTS[$p]}/small" \
    || { log "SKIPPING $p: not ready (log: $OUT/$p.log)"; continue; }
  # Sanity: every body size over h1, h1+TLS and h2+TLS; a mismatch is reported, not fatal.
  for f in small 16k 1m; do
    for v in "--http1.1 http://127.0.0.1:${PORT[$p]}" "--http1.1 https://127.0.0.1:${PORTS[$p]}" "--http2 https://127.0.0.1:${PORTS[$p]}"; do
      got=$(curl -sk --max-time 5 -o /dev/null -w '%{http_code} %{size_download} h%{http_version}' "${v% *}" "${v#* }/$f" || true)
      [[ $got == "200 ${SIZE[$f]} "* ]] || log "WARNING: $p ${v#* }/$f ${v% *}: got '$got', want '200 ${SIZE[$f]}'"
    done
  done
  TLS=$(openssl s_client -connect "127.0.0.1:${PORTS[$p]}" -alpn h2 </dev/null 2>/dev/null | grep -aE '^(New|ALPN)' | tr '\n' ' ' || true)
  log "$p ready (pid ${PID[$p]}, http :${PORT[$p]}, https :${PORTS[$p]}) TLS: $TLS"
  TARGETS+=("$p")
done
((${#TARGETS[@]})) || die "no proxy to benchmark"

# ------------------------------------------------------------- CPU accounting
CLK_TCK=$(getconf CLK_TCK)
# tree_pids and cpu_ticks: lib.sh.
origin_accepts() { nginx_status "${PORT[direct]}" 1; }

# ------------------------------------------------------------------ load runs
echo "round,scenario,target,load,requests,duration_s,rps,p50_us,p99_us,errors,non2xx,proxy_utime_ticks,proxy_stime_ticks,proxy_cpu_us_per_req,proxy_user_us_per_req,origin_cpu_us_per_req,origin_conns" >"$CSV"

run_one() { # round scenario target
  local round=$1 scen=$2 t=$3 http="http://127.0.0.1:${PORT[$3]}" https="https://127.0.0.1:${PORTS[$3]:-0}"
  local tool=wrk args url res
  case $scen in
    small)   args=(-t"$THREADS" -c"$CONNS");   url=$http/small ;;
    16k)     args=(-t"$THREADS" -c"$CONNS");   url=$http/16k ;;
    1m)      args=(-t"$THREADS" -c"$CONNS_1M"); url=$http/1m ;;
    newconn) args=(-t"$THREADS" -c"$CONNS" -H "Connection: close"); url=$http/small ;;
    latency) args=(-t1 -c1);                    url=$http/small ;;
    https)   args=(-t"$THREADS" -c"$CONNS");   url=$https/small ;;
    h2)      tool=h2load; args=(-t"$THREADS" -c"$CONNS" -m10); url=$https/small ;;
  esac
  local pids origin_pids u0 s0 u1 s1 ou0 os0 ou1 os1 out="$WORK/load.out"
  mapfile -t pids < <(tree_pids "${PID[$t]}"); mapfile -t origin_pids < <(tree_pids "${PID[direct]}")
  local busy=0 a0 a1; if build_running; then busy=1; fi
  a0=$(origin_accepts)
  read -r u0 s0 < <(cpu_ticks "${pids[@]}"); read -r ou0 os0 < <(cpu_ticks "${origin_pids[@]}")
  if [[ $tool == wrk ]]; then
    timeout $((DUR_S + 30)) wrk "${args[@]}" -d"${DUR_S}s" --timeout 5s --latency -s "$BENCH_DIR/wrk-report.lua" "$url" >"$out" 2>&1 || true
  else
    timeout $((DUR_S + 30)) h2load "${args[@]}" -D "$DUR_S" --log-file="$WORK/h2.log" "$url" >"$out" 2>&1 || true
  fi
  read -r u1 s1 < <(cpu_ticks "${pids[@]}"); read -r ou1 os1 < <(cpu_ticks "${origin_pids[@]}")
  a1=$(origin_accepts)
  if ((busy)) || build_running; then BUSY=$((BUSY + 1)); log "WARNING: a build was running during this run"; fi

  local req dur p50 p99 err non2xx
  if [[ $tool == wrk ]]; then
    # WRKRESULT requests duration_us p50 p99 connect read write status timeout
    res=$(grep '^WRKRESULT' "$out") || { log "$t/$scen: wrk produced no result:"; tail -3 "$out" >&2; return; }
    read -r _ req dur p50 p99 e1 e2 e3 non2xx e4 <<<"$res"
    dur=$(awk -v d="$dur" 'BEGIN{printf "%.3f", d/1e6}'); err=$((e1 + e2 + e3 + e4))
  else
    # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    res=$(grep '^requests:' "$out") || { log "$t/$scen: h2load produced no result:"; tail -3 "$out" >&2; return; }
    read -r req err <<<"$(awk '{print $6, $12 + $14}' <<<"$res")"
    non2xx=$(awk '/^status codes:/{print $5 + $7 + $9}' "$out")
    dur=$(awk '/^finished in/{sub(/s,$/, "", $3); print $3}' "$out")
    read -r p50 p99 < <(python3 "$BENCH_DIR/summarise.py" percentiles "$WORK/h2.log"); rm -f "$WORK/h2.log"
  fi
  ((req > 0)) || { log "$t/$scen: 0 requests completed"; tail -5 "$out" >&2; req=0; }
  local load="$tool ${args[*]} ${DUR_S}s"
  awk -v r="$round" -v s="$scen" -v t="$t" -v l="$load" -v n="$req" -v d="$dur" -v p50="$p50" -v p99="$p99" \
      -v e="$err" -v x="$non2xx" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v dox=$((ou1 + os1 - ou0 - os0)) -v oc=$((a1 - a0 - 1)) -v hz="$CLK_TCK" 'BEGIN {
    us = 1e6 / hz; nn = (n > 0 ? n : 1); own = (t == "direct" ? 0 : 1)
    printf "%s,%s,%s,%s,%d,%s,%.1f,%d,%d,%d,%d,%d,%d,%.2f,%.2f,%.2f,%d\n", r, s, t, l, n, d, (d > 0 ? n / d : 0), p50, p99, e, x,
      du, ds, own * (du + ds) * us / nn, own * du * us / nn, dox * us / nn, oc }' >>"$CSV"
  log "$(tail -1 "$CSV" | awk -F, '{printf "r%s %-8s %-8s %9.0f req/s  p50 %6dus  p99 %7dus  err %d/%d  cpu %6.2fus/req (usr %5.2f)  origin %6.2fus/req %6d conns", $1,$2,$3,$7,$8,$9,$10,$11,$14,$15,$16,$17}')"
}

# Warm up every proxy (upstream pools, page cache, TLS session state) untimed.
for t in "${TARGETS[@]}"; do
  timeout $((WARMUP + 10)) wrk -t1 -c10 -d"${WARMUP}s" "http://127.0.0.1:${PORT[$t]}/small" >/dev/null 2>&1 || true
done

nrun=0
for s in $SCENARIOS; do nrun=$((nrun + ${#TARGETS[@]})); if [[ $s == latency ]]; then ((++nrun)); fi; done
log "targets: ${TARGETS[*]}; $ROUNDS round(s) x $nrun runs x ${DUR_S}s (~$((ROUNDS * nrun * (DUR_S + PAUSE + 1) / 60 + 1)) min)"
for ((round = 1; round <= ROUNDS; round++)); do
  # Rotate the proxy order every round so no proxy always runs first/last.
  k=$(((round - 1) % ${#TARGETS[@]})); order=("${TARGETS[@]:k}" "${TARGETS[@]:0:k}")
  for s in $SCENARIOS; do
    [[ $s == latency ]] && order_s=(direct "${order[@]}") || order_s=("${order[@]}")
    for t in "${order_s[@]}"; do run_one "$round" "$s" "$t"; sleep "$PAUSE"; done
  done
done

# ---------------------------------------------------------------------- report
{
  echo "## Run $STAMP"
  echo
  echo "- command: \`DURATION=${DUR_S}s ROUNDS=$ROUNDS bench/run.sh\` (targets: ${TARGETS[*]})"
  echo "- load average before the run: $LOADAVG (anything else busy on the 2 cores skews all figures)"
  echo "- timed runs that overlapped a cargo/rustc build: $BUSY of $((ROUNDS * nrun))"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
  echo "- $(nginx -v 2>&1 | cut -d' ' -f3), haproxy $(haproxy -v | awk 'NR==1{print $3}'), $(wrk -v 2>&1 | awk 'NR==1{print $1, $2}'), $(h2load --version)"
  [[ -x $SLUICE_BIN && " ${TARGETS[*]} " == *" sluice "* ]] && echo "- sluice: $SLUICE_BIN (HEAD $SLUICE_REV)"
  echo "- CPU µs/req = (utime+stime of all proxy processes after − before) / requests completed (${CLK_TCK} ticks/s)"
  echo
  python3 "$BENCH_DIR/summarise.py" table "$CSV"
  echo "Total runtime: $((SECONDS - T0)) s"
} | tee "$OUT/results.md"
log "raw figures: $CSV; tables: $OUT/results.md"
