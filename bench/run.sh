#!/usr/bin/env bash
# Whole-proxy load benchmark: nginx vs HAProxy vs sluice (in several configurations), all in
# front of the same loopback nginx origin, interleaved round-robin.  See bench/README.md.
# Cache hits of several caches in depth: bench/cache.sh.
#
#   bench/run.sh                          # defaults: DURATION=10s ROUNDS=3
#   DURATION=3s ROUNDS=1 bench/run.sh     # quick smoke run
#   SLUICE_BIN=/tmp/a SLUICE_BIN_B=/tmp/b PROXIES="nginx haproxy sluice sluice-b" bench/run.sh
#
# Env: DURATION (seconds, "10" or "10s"), ROUNDS, PROXIES ("nginx haproxy sluice"; also
#      sluice-nocache, sluice-native, sluice-b), SCENARIOS ("small 16k 1m newconn latency
#      https h2 hit"), CONNS (50), CONNS_1M (8), THREADS (2), WARMUP (2s), PAUSE (1s between
#      runs), SLUICE_BIN (target/release/sluice, relative to the repo root; every sluice
#      target but sluice-b), SLUICE_BIN_B (the binary of sluice-b), SLUICE_CACHE (the [cache]
#      table of the cached sluice targets, default capacity = "256MiB"), BASE_CACHE (hit: nginx
#      and HAProxy cache /hit/ only; all: every path), QUIET_PCT (5), KEEP_TMP=1,
#      SLUICE_EXTRA (TOML appended to every sluice config), SLUICE_POOL_EXTRA (keys added to
#      sluice's pool table, e.g. 'retries = 0'), PROFILE (after the timed rounds, one untimed
#      run per target and word: "strace" = syscalls per request (strace -c -f), "perf" = hot
#      symbols (perf record -g), "allocs" = allocations per request from GET /stats of a
#      sluice built with --features count-allocs), PROFILE_S (5), PROFILE_SCENARIO (small).
# Output: markdown tables on stdout and in bench/out/<stamp>/results.md, raw
#         per-run figures in bench/out/<stamp>/runs.csv, configs and process logs alongside.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
DUR_S=${DURATION:-10}; DUR_S=${DUR_S%s}
ROUNDS=${ROUNDS:-3}
PROXIES=${PROXIES:-nginx haproxy sluice}
SCENARIOS=${SCENARIOS:-small 16k 1m newconn latency https h2 hit}
CONNS=${CONNS:-50}; CONNS_1M=${CONNS_1M:-8}; THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}; WARMUP=${WARMUP%s}; PAUSE=${PAUSE:-1}
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
[[ $SLUICE_BIN == /* ]] || SLUICE_BIN="$REPO_ROOT/$SLUICE_BIN"
SLUICE_BIN_B=${SLUICE_BIN_B:-}
[[ -z $SLUICE_BIN_B || $SLUICE_BIN_B == /* ]] || SLUICE_BIN_B="$REPO_ROOT/$SLUICE_BIN_B"
SLUICE_CACHE=${SLUICE_CACHE-$'[cache]\ncapacity = "256MiB"'}
BASE_CACHE=${BASE_CACHE:-hit}
QUIET_PCT=${QUIET_PCT:-5}
PROFILE=${PROFILE:-}; PROFILE_S=${PROFILE_S:-5}; PROFILE_SCENARIO=${PROFILE_SCENARIO:-small}
for w in $PROFILE; do
  [[ $w =~ ^(strace|perf|allocs)$ ]] || { echo "PROFILE words: strace perf allocs" >&2; exit 2; }
done
[[ $PROFILE_SCENARIO =~ ^(small|16k|newconn|hit)$ ]] || { echo "PROFILE_SCENARIO: small 16k newconn hit" >&2; exit 2; }
[[ $DUR_S =~ ^[0-9]+$ && $WARMUP =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ ]] \
  || { echo "DURATION/WARMUP/ROUNDS must be whole numbers" >&2; exit 2; }
[[ $QUIET_PCT =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "QUIET_PCT must be a number" >&2; exit 2; }
[[ $BASE_CACHE =~ ^(hit|all)$ ]] || { echo "BASE_CACHE must be hit or all" >&2; exit 2; }
for p in $PROXIES; do
  [[ $p =~ ^(nginx|haproxy|sluice|sluice-nocache|sluice-native|sluice-b)$ ]] \
    || { echo "unknown proxy $p (nginx haproxy sluice sluice-nocache sluice-native sluice-b)" >&2; exit 2; }
done
for s in $SCENARIOS; do
  [[ $s =~ ^(small|16k|1m|newconn|latency|https|h2|hit)$ ]] \
    || { echo "unknown scenario $s (small 16k 1m newconn latency https h2 hit)" >&2; exit 2; }
done
PLIST=()   # PROXIES de-duplicated, in the order given
for p in $PROXIES; do [[ " ${PLIST[*]} " == *" $p "* ]] || PLIST+=("$p"); done

. "$BENCH_DIR/lib.sh"

# ---------------------------------------------------------------- prerequisites
ensure_cmds nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client openssl:openssl curl:curl python3:python3

# ------------------------------------------------------- work dirs and cleanup
T0=$SECONDS
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg); LOADAVG1=${LOADAVG%% *}   # before anything is started
REV="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo no-commit)$(cd "$REPO_ROOT" && git diff --quiet HEAD -- host 2>/dev/null || echo '+uncommitted host/ changes')"
BUSY=0       # timed runs that overlapped a build on this machine
NOT_QUIET=0  # timed runs during which other processes used >= QUIET_PCT % of a core
if build_running; then
  log "WARNING: a build (cargo/rustc/cc) is running: it competes for the 2 cores and skews every figure"
fi
STAMP=$(date +%Y%m%d-%H%M%S)
OUT="$BENCH_DIR/out/$STAMP"; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX); chmod 755 "$WORK"
# nginx's proxy_cache keeps files: on tmpfs (like the in-memory caches of the others), under
# /tmp if that is tmpfs, else in /dev/shm.
if [[ $(stat -f -c %T /tmp) != tmpfs && $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs && -w /dev/shm ]]; then
  STORE=$(mktemp -d /dev/shm/sluice-bench.XXXXXX)
else
  STORE=$WORK/store; mkdir -p "$STORE"
fi
chmod 755 "$STORE"; STORE_FS=$(stat -f -c %T "$STORE")
CSV="$OUT/runs.csv"
declare -A PID=() PORT=() PORTS=() HIT=()   # per target: pid, cleartext port, TLS port, hit check

cleanup() {
  stop_started
  local f
  cp "$WORK"/*.log "$WORK"/*.toml "$WORK"/*.cfg "$OUT"/ 2>/dev/null || true
  for f in "$WORK"/*/nginx.conf "$WORK"/*/error.log; do   # origin/ and nginx/
    if [[ -s $f ]]; then cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"; fi
  done
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    log "kept $WORK (nginx cache: $STORE)"
  else
    rm -rf "$WORK"; if [[ $STORE == /dev/shm/sluice-bench.* ]]; then rm -rf "$STORE"; fi
  fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ ports, cert, files
read -r -a ports < <(free_ports $((1 + 3 * ${#PLIST[@]})))
PORT[direct]=${ports[0]}
declare -A PORTA=()   # sluice's admin listener (GET /stats for PROFILE=allocs)
for i in "${!PLIST[@]}"; do
  PORT[${PLIST[i]}]=${ports[1 + 3 * i]}; PORTS[${PLIST[i]}]=${ports[2 + 3 * i]}; PORTA[${PLIST[i]}]=${ports[3 + 3 * i]}
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"   # HAProxy wants both in one file

mkdir -p "$WORK/www"
head -c 100 /dev/zero | tr '\0' 's' >"$WORK/www/small"
head -c 16384 /dev/urandom >"$WORK/www/16k"
head -c 1048576 /dev/urandom >"$WORK/www/1m"
declare -A SIZE=([small]=100 [16k]=16384 [1m]=1048576)

# has_cache target: whether the target is configured with a cache (and so runs `hit`).
has_cache() { [[ $1 == nginx || $1 == haproxy || ($1 != sluice-nocache && -n $SLUICE_CACHE) ]]; }

# ------------------------------------------------------------------ configs
# nginx_conf (lib.sh): the common nginx preamble (origin and proxy): foreground, private pid/temp dirs.
# The origin's regular files say Cache-Control: no-store, so no proxy stores them: nginx's
# static files carry Last-Modified, which makes them heuristically cacheable (RFC 9111
# §4.2.2), and sluice's [cache] would store them (lifetime (Date - Last-Modified)/10, i.e.
# 0 s for files just written, so every request would become a revalidation; later, hits).
# With no-store every cached proxy measures its forwarding (miss) path in the regular
# scenarios. /hit/ serves the same files as cacheable for an hour (scenario `hit`).
# stub_status counts the connections the origin accepted and the requests it served.
nginx_conf origin 1 "  server { listen 127.0.0.1:${PORT[direct]}; root $WORK/www;
    location / { add_header Cache-Control \"no-store\"; }
    location /hit/ { alias $WORK/www/; add_header Cache-Control \"public, max-age=3600\"; }
    location = /_status { stub_status; } }"

# keepalive 512 idle upstream conns per worker: >= the 500 requests in flight in the h2
# scenario, so nginx does not churn upstream connections. proxy_max_temp_file_size 0:
# buffer in memory only, never spill 1 MiB bodies to disk. proxy_cache on /hit/ only unless
# BASE_CACHE=all (a cached response is written to the cache file anyway, so no
# proxy_max_temp_file_size there); X-Cache-Status for the hit check.
nginx_all_cache=""; [[ $BASE_CACHE == all ]] && nginx_all_cache="proxy_cache bench;"
nginx_conf nginx 2 "
  proxy_cache_path $STORE/nginx levels=1:2 keys_zone=bench:10m max_size=64m inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:${PORT[direct]}; keepalive 512; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${PORT[nginx]:-0};
    listen 127.0.0.1:${PORTS[nginx]:-0} ssl http2;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;  # nginx < 1.23.4 leaves TLSv1.3 out by default
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    location / {
      proxy_pass http://origin;
      proxy_max_temp_file_size 0;
      $nginx_all_cache
    }
    location /hit/ {
      proxy_pass http://origin;
      proxy_cache bench;
      proxy_cache_lock on;
      add_header X-Cache-Status \$upstream_cache_status;
    }
  }"

# HAProxy: /hit/ goes to a backend with its in-memory cache (max-age caps the TTL and
# defaults to 60 s, so it is set); the other paths to a backend without (BASE_CACHE=hit).
haproxy_all_cache=""
[[ $BASE_CACHE == all ]] && haproxy_all_cache=$'  http-request cache-use bench\n  http-response cache-store bench'
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
cache bench
  total-max-size 64
  max-age 3600
frontend fe
  bind 127.0.0.1:${PORT[haproxy]:-0}
  bind 127.0.0.1:${PORTS[haproxy]:-0} ssl crt $WORK/haproxy.pem alpn h2,http/1.1
  use_backend cached if { path_beg /hit/ }
  default_backend origin
backend origin
$haproxy_all_cache
  server o1 127.0.0.1:${PORT[direct]}
backend cached
  http-request cache-use bench
  http-response cache-store bench
  http-response set-header X-Cache-Status HIT if { res.cache_hit }
  server o1 127.0.0.1:${PORT[direct]}
EOF

sluice_conf() { # target: its TOML in $WORK/<target>.toml (cache: all but sluice-nocache; native: sluice-native)
  local t=$1 cache="" policy=""
  if has_cache "$t"; then cache=$SLUICE_CACHE; fi
  if [[ $t == sluice-native ]]; then policy=$'[policy]\nnative = true'; fi
  cat >"$WORK/$t.toml" <<EOF
[[listener]]
address = "127.0.0.1:${PORT[$t]}"

[[listener]]
address = "127.0.0.1:${PORTS[$t]}"
[listener.tls]
certificates = [{ cert = "$WORK/cert.pem", key = "$WORK/key.pem" }]

[[pool]]
name = "origin"
endpoints = [{ address = "127.0.0.1:${PORT[direct]}" }]
${SLUICE_POOL_EXTRA:-}

[proxy]
default_pool = "origin"

[admin]
address = "127.0.0.1:${PORTA[$t]}"

[log]
level = "warn"
access_log = false

$cache

$policy

${SLUICE_EXTRA:-}
EOF
}

# ------------------------------------------------------------ start processes
# start (lib.sh) records the PID of the exec'd process itself.
start direct nginx -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf"
wait_ready direct "http://127.0.0.1:${PORT[direct]}/small" || die "origin nginx did not start"
origin_accepts() { nginx_status "${PORT[direct]}" 1; }
origin_requests() { nginx_status "${PORT[direct]}" 3; }

skip() { # target reason: stop it (if started) and leave it out
  log "SKIPPING $1: $2"
  if [[ -n ${PID[$1]:-} ]]; then stop_pid "${PID[$1]}"; unset "PID[$1]"; fi
}

# hit_check target: fill /hit/small (one request), then a second request must be a hit: the
# proxy's cache header says so and the origin served no request for it. Prints the evidence.
hit_check() {
  local t=$1 url="http://127.0.0.1:${PORT[$1]}/hit/small" h ev r0 r1
  curl -s --max-time 5 -o /dev/null "$url" || true
  r0=$(origin_requests)
  h=$(curl -s --max-time 5 -D - -o /dev/null -w 'BODY %{http_code} %{size_download}\n' "$url" | tr -d '\r') || true
  r1=$(origin_requests)
  case $t in
    nginx|haproxy) ev=$(grep -i '^x-cache-status:' <<<"$h" || true) ;;
    *)             ev=$(grep -iE '^(cache-status|x-cache|age):' <<<"$h" | tr '\n' ' ' || true) ;;
  esac
  echo "${ev:-no cache header}; $(grep '^BODY' <<<"$h" | cut -d' ' -f2-); origin requests for it: $((r1 - r0 - 1))"
  if ! grep -q "^BODY 200 ${SIZE[small]}\$" <<<"$h" || ((r1 - r0 - 1 != 0)); then return 1; fi
  case $t in
    nginx|haproxy) [[ ${ev,,} =~ x-cache-status:\ *hit ]] ;;
    # RFC 9211: Cache-Status: <cache>; hit   (a miss is "; fwd=miss"); or X-Cache: HIT
    *)             [[ ${ev,,} =~ cache-status:.*\;\ *hit([\ \;,]|$) || ${ev,,} =~ x-cache:\ *hit ]] ;;
  esac
}

TARGETS=()
for p in "${PLIST[@]}"; do
  case $p in
    nginx)   start nginx nginx -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" ;;
    haproxy) start haproxy haproxy -db -f "$WORK/haproxy.cfg" ;;
    sluice*) bin=$SLUICE_BIN; [[ $p == sluice-b ]] && bin=$SLUICE_BIN_B
             if [[ $p == sluice-b && -z $bin ]]; then skip "$p" "set SLUICE_BIN_B to the second binary"; continue; fi
             if [[ ! -x $bin ]]; then
               skip "$p" "no executable at $bin (build with cargo build --release, or set SLUICE_BIN/SLUICE_BIN_B)"; continue
             fi
             sluice_conf "$p"
             start "$p" "$bin" run --config "$WORK/$p.toml" ;;
  esac
  if ! { wait_ready "$p" "http://127.0.0.1:${PORT[$p]}/small" && wait_ready "$p" "https://127.0.0.1:${PORTS[$p]}/small"; }; then
    skip "$p" "not ready (log: $OUT/$p.log; a sluice build without the cache rejects the [cache] table)"; continue
  fi
  # Sanity: every body size over h1, h1+TLS and h2+TLS; a mismatch is reported, not fatal.
  for f in small 16k 1m; do
    for v in "--http1.1 http://127.0.0.1:${PORT[$p]}" "--http1.1 https://127.0.0.1:${PORTS[$p]}" "--http2 https://127.0.0.1:${PORTS[$p]}"; do
      got=$(curl -sk --max-time 5 -o /dev/null -w '%{http_code} %{size_download} h%{http_version}' "${v% *}" "${v#* }/$f" || true)
      [[ $got == "200 ${SIZE[$f]} "* ]] || log "WARNING: $p ${v#* }/$f ${v% *}: got '$got', want '200 ${SIZE[$f]}'"
    done
  done
  hdrs=$(curl -s --max-time 5 -D - -o /dev/null "http://127.0.0.1:${PORT[$p]}/small" | tr -d '\r' | sed -n 's/^\([A-Za-z0-9-]*\): *\(.*\)/\1: \2/p' | grep -viE '^(date|last-modified|etag):' | paste -sd';' - || true)
  log "$p /small response header fields (without date, last-modified, etag): $hdrs"
  if has_cache "$p"; then
    if ev=$(hit_check "$p"); then HIT[$p]=hit; log "$p /hit/small: hit ($ev)"
    else HIT[$p]=NO; log "WARNING: $p /hit/small is NOT a hit, or a wrong response ($ev); its hit figures are not hits"; fi
  fi
  TLS=$(openssl s_client -connect "127.0.0.1:${PORTS[$p]}" -alpn h2 </dev/null 2>/dev/null | grep -aE '^(New|ALPN)' | tr '\n' ' ' || true)
  mapfile -t pids < <(tree_pids "${PID[$p]}")
  log "$p ready (pid ${PID[$p]}, CPU summed over ${#pids[@]} processes: ${pids[*]}; http :${PORT[$p]}, https :${PORTS[$p]}) TLS: $TLS"
  TARGETS+=("$p")
done
((${#TARGETS[@]})) || die "no proxy to benchmark"

# ------------------------------------------------------------- CPU accounting
CLK_TCK=$(getconf CLK_TCK)
# tree_pids, cpu_ticks, sys_cpu, run_timed, proc_others: lib.sh.
#
# Quietness of a run: the CPU that everything but the benchmark used meanwhile, as % of one
# core over the run's wall time, two ways. A run is quiet when others_pct_core < QUIET_PCT;
# others_stat_pct_core is recorded as a cross-check only: it also counts the kernel's own
# work for the benchmark's traffic that no process is charged with (loopback softirqs run on
# an otherwise idle CPU), which reached 55 % of a core in h2 runs on an idle machine while
# the exact figure stayed below 4.5 % (run 20261207-023539):
# others_stat_pct_core = (non-idle jiffies of all CPUs in /proc/stat after - before)
#          - the proxy's process tree - the origin's process tree (/proc/PID/stat utime+stime,
#            after - before)
#          - the load generator (wrk or h2load with its `timeout` and wrapper shell: their
#            getrusage totals, printed by `times` in the wrapper once the tool has exited).
#   It includes interrupts taken while a CPU was idle and steal time. But /proc/stat is
#   sampled at each timer tick while the process figures are exact runtimes: with NO_HZ
#   idle a CPU that wakes for 50 µs and sleeps again is seldom ticked, so in the unloaded
#   `latency` runs it comes out 10-20 % of a core too LOW (negative); under saturation the two
#   agree within a few %.
# others_pct_core = utime+stime+cutime+cstime of every process outside this script's process
#   tree (proxies, origin, load generator and helpers are all in it), after - before: exact,
#   and it sees short-lived processes through their parents' cutime (see proc_others).

# ------------------------------------------------------------------ load runs
echo "round,scenario,target,load,requests,duration_s,rps,p50_us,p99_us,errors,non2xx,proxy_utime_ticks,proxy_stime_ticks,proxy_cpu_us_per_req,proxy_user_us_per_req,origin_cpu_us_per_req,origin_conns,origin_requests,loadavg1,others_pct_core,steal_pct_core,quiet,loadgen_ticks,window_s,others_stat_pct_core,others_scans,proxy_csw_per_req" >"$CSV"

run_one() { # round scenario target
  local round=$1 scen=$2 t=$3 http="http://127.0.0.1:${PORT[$3]}" https="https://127.0.0.1:${PORTS[$3]:-0}"
  local tool=wrk args url res cmd
  case $scen in
    small)   args=(-t"$THREADS" -c"$CONNS");   url=$http/small ;;
    16k)     args=(-t"$THREADS" -c"$CONNS");   url=$http/16k ;;
    1m)      args=(-t"$THREADS" -c"$CONNS_1M"); url=$http/1m ;;
    newconn) args=(-t"$THREADS" -c"$CONNS" -H "Connection: close"); url=$http/small ;;
    latency) args=(-t1 -c1);                    url=$http/small ;;
    https)   args=(-t"$THREADS" -c"$CONNS");   url=$https/small ;;
    h2)      tool=h2load; args=(-t"$THREADS" -c"$CONNS" -m10); url=$https/small ;;
    hit)     args=(-t"$THREADS" -c"$CONNS");   url=$http/hit/small ;;
  esac
  if [[ $tool == wrk ]]; then
    cmd=(timeout $((DUR_S + 30)) wrk "${args[@]}" -d"${DUR_S}s" --timeout 5s --latency -s "$BENCH_DIR/wrk-report.lua" "$url")
  else
    cmd=(timeout $((DUR_S + 30)) h2load "${args[@]}" -D "$DUR_S" --log-file="$WORK/h2.log" "$url")
  fi
  local pids origin_pids u0 s0 u1 s1 ou0 os0 ou1 os1 out="$WORK/load.out"
  mapfile -t pids < <(tree_pids "${PID[$t]}"); mapfile -t origin_pids < <(tree_pids "${PID[direct]}")
  local busy=0 a0 a1 r0 r1 la b0 b1 st0 st1 up0 up1 lg o0 o1 sc cs0 cs1
  if build_running; then busy=1; fi
  read -r la _ </proc/loadavg
  # The origin's status requests stay outside the measured window (and are subtracted:
  # a1 - a0 counts r0, r1 and a1; r1 - r0 counts r1).
  a0=$(origin_accepts); r0=$(origin_requests)
  proc_others $$; o0=$OTHERS_TICKS sc=$OTHERS_SCANS   # in this shell, no fork; its tree is excluded
  sys_cpu; b0=$SYS_BUSY st0=$SYS_STEAL up0=$SYS_UP
  read -r u0 s0 < <(cpu_ticks "${pids[@]}"); read -r ou0 os0 < <(cpu_ticks "${origin_pids[@]}")
  cs0=$(ctx_switches "${pids[@]}")
  lg=$(run_timed "$out" "${cmd[@]}" | times_ticks "$CLK_TCK")
  cs1=$(ctx_switches "${pids[@]}")
  read -r u1 s1 < <(cpu_ticks "${pids[@]}"); read -r ou1 os1 < <(cpu_ticks "${origin_pids[@]}")
  sys_cpu; b1=$SYS_BUSY st1=$SYS_STEAL up1=$SYS_UP
  proc_others $$; o1=$OTHERS_TICKS; ((OTHERS_SCANS > sc)) && sc=$OTHERS_SCANS
  r1=$(origin_requests); a1=$(origin_accepts)
  if ((busy)) || build_running; then BUSY=$((BUSY + 1)); log "WARNING: a build was running during this run"; fi

  local req dur p50 p99 err non2xx e1 e2 e3 e4
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
      -v e="$err" -v x="$non2xx" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v dox=$((ou1 + os1 - ou0 - os0)) \
      -v oc=$((a1 - a0 - 3)) -v orq=$((r1 - r0 - 1)) -v hz="$CLK_TCK" -v la="$la" -v db=$((b1 - b0)) \
      -v dst=$((st1 - st0)) -v lg="$lg" -v up0="$up0" -v up1="$up1" -v q="$QUIET_PCT" -v dot=$((o1 - o0)) -v sc="$sc" -v csw=$((cs1 - cs0)) 'BEGIN {
    us = 1e6 / hz; nn = (n > 0 ? n : 1); own = (t == "direct" ? 0 : 1)   # direct: the origin is the target
    w = up1 - up0; if (w <= 0) w = 0.01
    ostat = (db - own * (du + ds) - dox - lg) / hz / w * 100; others = dot / hz / w * 100
    printf "%s,%s,%s,%s,%d,%s,%.1f,%d,%d,%d,%d,%d,%d,%.2f,%.2f,%.2f,%d,%d,%s,%.1f,%.1f,%d,%d,%.2f,%.1f,%d,%.3f\n", r, s, t, l, n, d, (d > 0 ? n / d : 0), p50, p99, e, x,
      du, ds, own * (du + ds) * us / nn, own * du * us / nn, dox * us / nn, oc, orq,
      la, others, dst / hz / w * 100, (others < q ? 1 : 0), lg, w, ostat, sc, own * csw / nn }' >>"$CSV"
  log "$(tail -1 "$CSV" | awk -F, '{printf "r%s %-8s %-14s %9.0f req/s  p50 %6dus  p99 %7dus  err %d/%d  cpu %6.2fus/req (usr %5.2f)  origin %6.2fus/req %6d conns %7d reqs  others %5.1f%% (stat %5.1f%%) load %s", $1,$2,$3,$7,$8,$9,$10,$11,$14,$15,$16,$17,$18,$20,$25,$19}')"
  if [[ $(tail -1 "$CSV" | cut -d, -f22) != 1 ]]; then
    NOT_QUIET=$((NOT_QUIET + 1)); log "WARNING: not quiet: other processes used ≥ ${QUIET_PCT} % of a core during this run"
  fi
  if [[ $scen == hit ]] && (($(tail -1 "$CSV" | cut -d, -f18) > 10)); then
    log "WARNING: $t/hit: the origin served $(tail -1 "$CSV" | cut -d, -f18) requests during the run: not hits only"
  fi
}

# Warm up every proxy (upstream pools, page cache, TLS session state) untimed.
for t in "${TARGETS[@]}"; do
  timeout $((WARMUP + 10)) wrk -t1 -c10 -d"${WARMUP}s" "http://127.0.0.1:${PORT[$t]}/small" >/dev/null 2>&1 || true
done

targets_of() { # scenario target... -> the targets the scenario runs, in the order given
  local s=$1 t; shift
  for t in "$@"; do
    if [[ $s != hit ]] || has_cache "$t"; then echo "$t"; fi
  done
}
nrun=0
for s in $SCENARIOS; do
  mapfile -t ts < <(targets_of "$s" "${TARGETS[@]}")
  nrun=$((nrun + ${#ts[@]})); if [[ $s == latency ]]; then ((++nrun)); fi
done
log "targets: ${TARGETS[*]}; $ROUNDS round(s) x $nrun runs x ${DUR_S}s (~$((ROUNDS * nrun * (DUR_S + PAUSE + 1) / 60 + 1)) min)"
for ((round = 1; round <= ROUNDS; round++)); do
  # Rotate the proxy order every round so no proxy always runs first/last.
  k=$(((round - 1) % ${#TARGETS[@]})); order=("${TARGETS[@]:k}" "${TARGETS[@]:0:k}")
  for s in $SCENARIOS; do
    mapfile -t order_s < <(targets_of "$s" "${order[@]}")
    [[ $s == latency ]] && order_s=(direct "${order_s[@]}")
    for t in "${order_s[@]}"; do run_one "$round" "$s" "$t"; sleep "$PAUSE"; done
  done
done

# --------------------------------------------------------------------- profile
# Untimed: strace and perf slow the proxy down, so these runs only count (syscalls, samples,
# allocations) per request; their CPU figures are not kept. One run per target and word.
declare -A PROF=()
prof_url() { # target -> the URL of PROFILE_SCENARIO
  local path
  case $PROFILE_SCENARIO in small | newconn) path=/small ;; 16k) path=/16k ;; hit) path=/hit/small ;; esac
  echo "http://127.0.0.1:${PORT[$1]}$path"
}
prof_wrk() { # target -> requests completed by a bounded wrk run of PROFILE_SCENARIO
  local extra=() res; [[ $PROFILE_SCENARIO == newconn ]] && extra=(-H "Connection: close")
  res=$(timeout $((PROFILE_S + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${PROFILE_S}s" "${extra[@]}" --timeout 5s \
        -s "$BENCH_DIR/wrk-report.lua" "$(prof_url "$1")" 2>&1 | grep '^WRKRESULT') || { echo 0; return; }
  awk '{print $2}' <<<"$res"
}
stats_allocs() { # target -> "count bytes" from sluice's GET /stats, or nothing
  curl -s --max-time 2 "http://127.0.0.1:${PORTA[$1]}/stats" \
    | python3 -c 'import json,sys; a=json.load(sys.stdin).get("allocations"); print(a["count"], a["bytes"]) if a else None' 2>/dev/null || true
}
profile_one() { # target word
  local t=$1 w=$2 pids list n sp out="$OUT/profile-$1-$2.txt" a0 a1 b0 b1 k
  mapfile -t pids < <(tree_pids "${PID[$t]}"); list=$(IFS=,; echo "${pids[*]}")
  case $w in
    strace)
      strace -c -f -q -o "$out" -p "$list" & sp=$!
      sleep 1   # strace attaches to every thread before the load starts
      n=$(prof_wrk "$t"); kill -INT "$sp" 2>/dev/null; wait "$sp" 2>/dev/null || true
      PROF[$t,$w]=$(awk -v n="$n" '$NF == "total" {printf "%.1f", (n > 0 ? $4 / n : 0)}' "$out")
      PROF[$t,$w-top]=$(awk -v n="$n" 'NR > 2 && $NF != "total" && $1 ~ /^[0-9.]+$/ && n > 0 {printf "%s %.2f, ", $NF, $4 / n}' "$out" | cut -d, -f1-5)
      ;;
    perf)
      perf record -q -F 999 -g -o "$WORK/perf-$t.data" -p "$list" -- sleep $((PROFILE_S + 1)) >/dev/null 2>&1 & sp=$!
      n=$(prof_wrk "$t"); wait "$sp" 2>/dev/null || true
      perf report -i "$WORK/perf-$t.data" --no-children --sort dso,symbol --stdio -g none \
        --percent-limit 0.01 2>/dev/null | grep -v '^$' >"$out" || true
      # Samples per component (kernel, allocator, memcpy, each Rust crate...).
      PROF[$t,$w]=$(python3 "$BENCH_DIR/summarise.py" perf-groups "$out")
      ;;
    allocs)
      read -r a0 b0 <<<"$(stats_allocs "$t")"
      if [[ -z ${a0:-} ]]; then PROF[$t,$w]="n/a (not a count-allocs build)"; return; fi
      n=$(prof_wrk "$t"); read -r a1 b1 <<<"$(stats_allocs "$t")"
      PROF[$t,$w]=$(awk -v n="$n" -v a=$((a1 - a0)) -v b=$((b1 - b0)) 'BEGIN {printf "%.1f allocations, %.0f bytes", a / n, b / n}')
      echo "requests $n allocations $((a1 - a0)) bytes $((b1 - b0))" >"$out"
      ;;
  esac
  log "profile $t $w ($PROFILE_SCENARIO, $n requests): ${PROF[$t,$w]} ${PROF[$t,$w-top]:-}"
}
for w in $PROFILE; do
  if [[ $w == strace ]]; then ensure_cmds strace:strace; fi
  if [[ $w == perf ]]; then ensure_cmds perf:linux-perf; fi
  for t in "${TARGETS[@]}"; do
    [[ $w == allocs && $t != sluice* ]] && continue
    profile_one "$t" "$w"
  done
done
prof_table() {
  [[ -n $PROFILE ]] || return 0
  local t w
  echo "### Profile: $PROFILE_SCENARIO, untimed (\`PROFILE=\"$PROFILE\"\`, ${PROFILE_S}s per run)"
  echo
  echo "| proxy | $(for w in $PROFILE; do printf '%s | ' "$w"; done)"
  echo "|---|$(for w in $PROFILE; do printf -- '---|'; done)"
  for t in "${TARGETS[@]}"; do
    printf '| %s |' "$t"
    for w in $PROFILE; do
      case $w in
        strace) printf ' %s syscalls/req (%s) |' "${PROF[$t,$w]:-—}" "${PROF[$t,$w-top]:-}" ;;
        *) printf ' %s |' "${PROF[$t,$w]:-—}" ;;
      esac
    done
    echo
  done
  echo
  echo "(files: profile-<proxy>-<word>.txt next to results.md)"
  echo
}

# ---------------------------------------------------------------------- report
bin_info() { # binary -> "path (built …, sha256 …)"
  echo "$1 (built $(date -r "$1" '+%F %T' 2>/dev/null || echo '?'), sha256 $(sha256sum "$1" 2>/dev/null | cut -c1-12))"
}
sluice_lines() {
  local t have_a="" have_b=""
  for t in "${TARGETS[@]}"; do
    case $t in sluice-b) have_b=1 ;; sluice*) have_a=1 ;; esac
  done
  if [[ -n $have_a ]]; then echo "- sluice (sluice, sluice-nocache, sluice-native): $(bin_info "$SLUICE_BIN"); repo HEAD $REV at start"; fi
  if [[ -n $have_b ]]; then echo "- sluice-b: $(bin_info "$SLUICE_BIN_B")"; fi
  if [[ -n $have_a$have_b ]]; then
    echo "- sluice configs: default Wasm policy; cache table of sluice, sluice-native, sluice-b: \`${SLUICE_CACHE//$'\n'/ }\`; sluice-native adds \`[policy] native = true\`${SLUICE_EXTRA:+; all add \`${SLUICE_EXTRA//$'\n'/ }\`}"
  fi
}
hit_line() {
  local t v=()
  for t in "${TARGETS[@]}"; do if [[ -n ${HIT[$t]:-} ]]; then v+=("$t ${HIT[$t]}"); fi; done
  ((${#v[@]})) && echo "- hit check before the timed runs (second GET of /hit/small): ${v[*]}"
  return 0
}
NRUNS=$(($(wc -l <"$CSV") - 1))
if [[ $(awk -v l="$LOADAVG1" 'BEGIN{print (l < 0.2)}') == 1 && $NOT_QUIET == 0 ]]; then QUIET_ALL="quiet"; else QUIET_ALL="NOT quiet"; fi
{
  echo "## Run $STAMP"
  echo
  echo "- command: \`DURATION=${DUR_S}s ROUNDS=$ROUNDS PROXIES=\"$PROXIES\" SCENARIOS=\"$SCENARIOS\"$([[ $BASE_CACHE == all ]] && echo ' BASE_CACHE=all') bench/run.sh\` (targets: ${TARGETS[*]})"
  echo "- load average before the run: $LOADAVG (1-min < 0.2: $(awk -v l="$LOADAVG1" 'BEGIN{print (l < 0.2 ? "yes" : "NO")}'))"
  echo "- timed runs not quiet (other processes used ≥ ${QUIET_PCT} % of a core): $NOT_QUIET of $NRUNS; machine: **$QUIET_ALL**"
  echo "- timed runs that overlapped a cargo/rustc build: $BUSY of $NRUNS"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
  echo "- $(nginx -v 2>&1 | cut -d' ' -f3), haproxy $(haproxy -v | awk 'NR==1{print $3}'), $(wrk -v 2>&1 | awk 'NR==1{print $1, $2}'), $(h2load --version)"
  sluice_lines
  echo "- origin: \`Cache-Control: no-store\` on /small /16k /1m, \`public, max-age=3600\` on /hit/; nginx proxy_cache (files on $STORE_FS) and HAProxy cache on $([[ $BASE_CACHE == all ]] && echo 'every path' || echo '/hit/ only')"
  hit_line
  echo "- CPU µs/req = (utime+stime of all proxy processes after − before) / requests completed (${CLK_TCK} ticks/s)"
  echo "- medians over the quiet runs of each row when it has any (column quiet); ratios to nginx and to the best of nginx and HAProxy (req/s: max, CPU and p99: min; latency: added p50, min)"
  echo
  if ((NRUNS > 0)); then python3 "$BENCH_DIR/summarise.py" table "$CSV"; fi
  prof_table
  echo "Total runtime: $((SECONDS - T0)) s"
} | tee "$OUT/results.md"
log "raw figures: $CSV; tables: $OUT/results.md"
