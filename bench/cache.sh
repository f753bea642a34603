#!/usr/bin/env bash
# Cache-hit benchmark: nginx proxy_cache vs Varnish vs HAProxy's cache vs sluice's [cache], all
# in front of the same loopback nginx origin, whose responses carry Cache-Control: max-age=3600.
# Every cache is filled and a hit verified before the timed runs; the origin's request counter
# shows that the timed runs are (almost) hits only. See bench/README.md ("Cache hits").
#
#   bench/cache.sh                               # defaults: DURATION=10s ROUNDS=3
#   DURATION=3s ROUNDS=1 bench/cache.sh          # smoke run
#   PROXIES="nginx varnish" bench/cache.sh
#
# Env: DURATION (seconds), ROUNDS, PROXIES ("nginx varnish haproxy sluice"),
#      SCENARIOS ("small 16k"; also "1m"), CONNS (50), CONNS_1M (8), THREADS (2), WARMUP (2s),
#      PAUSE (1s), SLUICE_BIN (target/release/sluice), SLUICE_CACHE ('[cache]' table given to
#      sluice, default: capacity = "256MiB"), SLUICE_EXTRA (more TOML for sluice),
#      NGINX_CACHE_EXTRA (directives added to nginx's cached location), VARNISH_ARGS (more
#      varnishd arguments, e.g. "-p thread_pools=1"), REQUIRE_HIT (1: a proxy whose second
#      response is not a hit is skipped; 0: only warned about), KEEP_TMP=1.
# Output: markdown tables on stdout and in bench/out/cache-<stamp>/results.md, every run in
#         runs.csv alongside, and the process logs.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
DUR_S=${DURATION:-10}; DUR_S=${DUR_S%s}
ROUNDS=${ROUNDS:-3}
PROXIES=${PROXIES:-nginx varnish haproxy sluice}
SCENARIOS=${SCENARIOS:-small 16k}
CONNS=${CONNS:-50}; CONNS_1M=${CONNS_1M:-8}; THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}; WARMUP=${WARMUP%s}; PAUSE=${PAUSE:-1}
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
[[ $SLUICE_BIN == /* ]] || SLUICE_BIN="$REPO_ROOT/$SLUICE_BIN"
SLUICE_CACHE=${SLUICE_CACHE-$'[cache]\ncapacity = "256MiB"'}
REQUIRE_HIT=${REQUIRE_HIT:-1}
[[ $DUR_S =~ ^[0-9]+$ && $WARMUP =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ ]] \
  || { echo "DURATION/WARMUP/ROUNDS must be whole numbers" >&2; exit 2; }
for s in $SCENARIOS; do [[ $s =~ ^(small|16k|1m)$ ]] || { echo "unknown scenario $s (small 16k 1m)" >&2; exit 2; }; done
for p in $PROXIES; do [[ $p =~ ^(nginx|varnish|haproxy|sluice)$ ]] || { echo "unknown proxy $p (nginx varnish haproxy sluice)" >&2; exit 2; }; done

. "$BENCH_DIR/lib.sh"

# ---------------------------------------------------------------- prerequisites
need=(nginx:nginx wrk:wrk curl:curl python3:python3)
[[ " $PROXIES " == *" haproxy "* ]] && need+=(haproxy:haproxy)
[[ " $PROXIES " == *" varnish "* ]] && need+=(varnishd:varnish varnishstat:varnish)
ensure_cmds "${need[@]}"

# ------------------------------------------------------- work dirs and cleanup
T0=$SECONDS
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
SLUICE_REV="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo no-commit)$(cd "$REPO_ROOT" && git diff --quiet HEAD -- host 2>/dev/null || echo '+uncommitted host/ changes') at start; binary built $(date -r "$SLUICE_BIN" '+%F %T' 2>/dev/null || echo '?')"
BUSY=0
if build_running; then
  log "WARNING: a build (cargo/rustc/cc) is running: it competes for the 2 cores and skews every figure"
fi
STAMP=$(date +%Y%m%d-%H%M%S)
OUT="$BENCH_DIR/out/cache-$STAMP"; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/sluice-cache-bench.XXXXXX); chmod 755 "$WORK"
# Cache storage of nginx (files) on tmpfs if /tmp is not: the others keep theirs in memory.
STORE=""
if [[ $(stat -f -c %T /tmp) == tmpfs ]]; then
  STORE=$WORK/store
elif [[ $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs && -w /dev/shm ]]; then
  STORE=$(mktemp -d /dev/shm/sluice-cache-bench.XXXXXX)
else
  STORE=$WORK/store
fi
mkdir -p "$STORE"; chmod 755 "$STORE"
STORE_FS=$(stat -f -c %T "$STORE")
CSV="$OUT/runs.csv"
declare -A PID=() PORT=()

cleanup() {
  stop_started
  local f
  cp "$WORK"/*.log "$WORK"/*.toml "$WORK"/*.cfg "$OUT"/ 2>/dev/null || true
  for f in "$WORK"/*/nginx.conf "$WORK"/*/error.log; do   # origin/ and nginx/
    [[ -s $f ]] && cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"
  done
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    log "kept $WORK (cache storage: $STORE)"
  else
    rm -rf "$WORK"; [[ $STORE == /dev/shm/sluice-cache-bench.* ]] && rm -rf "$STORE"
  fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ ports, files, configs
read -r "PORT[direct]" "PORT[nginx]" "PORT[varnish]" "PORT[haproxy]" "PORT[sluice]" < <(free_ports 5)

mkdir -p "$WORK/www"
head -c 100 /dev/zero | tr '\0' 's' >"$WORK/www/small"
head -c 16384 /dev/urandom >"$WORK/www/16k"
head -c 1048576 /dev/urandom >"$WORK/www/1m"
declare -A SIZE=([small]=100 [16k]=16384 [1m]=1048576)

# Origin: every file cacheable for an hour; stub_status counts the requests that reach it.
nginx_conf origin 1 "  server { listen 127.0.0.1:${PORT[direct]}; root $WORK/www;
    location / { add_header Cache-Control \"max-age=3600\"; }
    location = /_status { stub_status; } }"

# nginx: proxy_cache in files under \$STORE (tmpfs when available), one shared keys_zone for
# both workers, proxy_cache_lock so a cold URL is fetched once. X-Cache-Status shows
# \$upstream_cache_status (HIT/MISS) for the hit check.
nginx_conf nginx 2 "
  proxy_cache_path $STORE/nginx levels=1:2 keys_zone=bench:10m max_size=256m inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:${PORT[direct]}; keepalive 512; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${PORT[nginx]};
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_cache bench;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
      add_header X-Cache-Status \$upstream_cache_status;
      ${NGINX_CACHE_EXTRA:-}
    }
  }"

# HAProxy: its in-memory cache. max-age caps the TTL (default 60 s!); max-object-size defaults
# to total-max-size/256 = 1 MiB, too small for the 1 MiB file with its headers.
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
  total-max-size 256
  max-object-size 2097152
  max-age 3600
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  default_backend origin
backend origin
  http-request cache-use bench
  http-response cache-store bench
  http-response set-header X-Cache-Status HIT if { res.cache_hit }
  server o1 127.0.0.1:${PORT[direct]}
EOF

cat >"$WORK/sluice.toml" <<EOF
[[listener]]
address = "127.0.0.1:${PORT[sluice]}"

[[pool]]
name = "origin"
endpoints = [{ address = "127.0.0.1:${PORT[direct]}" }]

[proxy]
default_pool = "origin"

[log]
level = "warn"
access_log = false

$SLUICE_CACHE

${SLUICE_EXTRA:-}
EOF

# ------------------------------------------------------------ start processes
start direct nginx -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf"
wait_ready direct "http://127.0.0.1:${PORT[direct]}/small" || die "origin nginx did not start"
origin_requests() { nginx_status "${PORT[direct]}" 3; }

skip() { # name reason: stop it (if started) and leave it out
  log "SKIPPING $1: $2"
  if [[ -n ${PID[$1]:-} ]]; then stop_pid "${PID[$1]}"; unset "PID[$1]"; fi
}

# hit_check target url: fill (one request), then a second request must be a hit. Prints the
# evidence (the cache headers of the second response); the status says hit (0) or not.
hit_check() {
  local t=$1 url=$2 h ev want=$3
  curl -s --max-time 5 -o /dev/null "$url" || true
  h=$(curl -s --max-time 5 -D - -o /dev/null -w 'BODY %{http_code} %{size_download}\n' "$url" | tr -d '\r') || true
  case $t in
    nginx|haproxy) ev=$(grep -i '^x-cache-status:' <<<"$h" || true) ;;
    varnish)       ev=$(grep -iE '^(x-varnish|age):' <<<"$h" | tr '\n' ' ' || true) ;;
    sluice)        ev=$(grep -iE '^(cache-status|x-cache|age):' <<<"$h" | tr '\n' ' ' || true) ;;
  esac
  echo "${ev:-no cache header}; $(grep '^BODY' <<<"$h" | cut -d' ' -f2-)"
  grep -q "^BODY 200 $want\$" <<<"$h" || return 1
  case $t in
    nginx|haproxy) [[ ${ev,,} =~ x-cache-status:\ *hit ]] ;;
    # X-Varnish: <this request's id> <id of the request that stored the object> on a hit.
    varnish)       [[ ${ev,,} =~ x-varnish:\ *[0-9]+\ +[0-9]+ ]] ;;
    # RFC 9211: Cache-Status: <cache>; hit   (a miss is "; fwd=miss"); or X-Cache: HIT
    sluice)        [[ ${ev,,} =~ cache-status:.*\;\ *hit([\ \;,]|$) || ${ev,,} =~ x-cache:\ *hit ]] ;;
  esac
}

TARGETS=()
for p in $PROXIES; do
  case $p in
    nginx)   start nginx nginx -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" ;;
    haproxy) start haproxy haproxy -db -f "$WORK/haproxy.cfg" ;;
    # -F: manager in the foreground (the PID we record); it forks the cache child process.
    # -T none: no management port. -n: its working dir (shared-memory log) in our temp dir.
    varnish) read -r -a vargs <<<"${VARNISH_ARGS:-}"
             start varnish varnishd -F -n "$WORK/varnish" -a "127.0.0.1:${PORT[varnish]}" \
               -b "127.0.0.1:${PORT[direct]}" -s malloc,256m -T none "${vargs[@]}" ;;
    sluice)  if [[ ! -x $SLUICE_BIN ]]; then
               skip sluice "no executable at $SLUICE_BIN (build with cargo build --release, or set SLUICE_BIN)"; continue
             fi
             start sluice "$SLUICE_BIN" run --config "$WORK/sluice.toml" ;;
  esac
  if ! wait_ready "$p" "http://127.0.0.1:${PORT[$p]}/small"; then
    if [[ $p == sluice ]]; then
      skip sluice "it did not start with the cache table in its config (a build without cache support rejects [cache]); see $OUT/sluice.log"
    else
      skip "$p" "not ready (log: $OUT/$p.log)"
    fi
    continue
  fi
  ok=1 o0=$(origin_requests)
  for s in $SCENARIOS; do
    if ev=$(hit_check "$p" "http://127.0.0.1:${PORT[$p]}/$s" "${SIZE[$s]}"); then
      log "$p /$s: hit ($ev)"
    else
      log "$p /$s: NOT a hit, or a wrong response ($ev; want 200 ${SIZE[$s]} and a hit)"; ok=0
    fi
  done
  o1=$(origin_requests)
  if ((!ok)); then
    if [[ $REQUIRE_HIT == 1 ]]; then skip "$p" "no cache hit (set REQUIRE_HIT=0 to measure it anyway)"; continue; fi
    log "WARNING: $p is measured although it did not show a hit (REQUIRE_HIT=0)"
  fi
  mapfile -t pids < <(tree_pids "${PID[$p]}")
  log "$p ready (pid ${PID[$p]}, CPU summed over ${#pids[@]} processes: ${pids[*]}; http :${PORT[$p]}; origin requests while filling: $((o1 - o0 - 1)))"
  TARGETS+=("$p")
done
((${#TARGETS[@]})) || die "no proxy to benchmark"

# ------------------------------------------------------------------ load runs
CLK_TCK=$(getconf CLK_TCK)
echo "round,scenario,target,load,requests,duration_s,rps,p50_us,p99_us,errors,non2xx,proxy_utime_ticks,proxy_stime_ticks,proxy_cpu_us_per_req,proxy_user_us_per_req,origin_cpu_us_per_req,origin_conns,origin_requests,proxy_processes" >"$CSV"

run_one() { # round scenario target
  local round=$1 s=$2 t=$3 url="http://127.0.0.1:${PORT[$3]}/$2" args res out="$WORK/load.out"
  if [[ $s == 1m ]]; then args=(-t"$THREADS" -c"$CONNS_1M"); else args=(-t"$THREADS" -c"$CONNS"); fi
  local pids origin_pids u0 s0 u1 s1 ou0 os0 ou1 os1 a0 a1 r0 r1 busy=0
  # Every process of the proxy: nginx master + workers + cache manager/loader, varnishd manager
  # + cache child, HAProxy and sluice one process (all threads).
  mapfile -t pids < <(tree_pids "${PID[$t]}"); mapfile -t origin_pids < <(tree_pids "${PID[direct]}")
  if build_running; then busy=1; fi
  a0=$(nginx_status "${PORT[direct]}" 1); r0=$(origin_requests)
  read -r u0 s0 < <(cpu_ticks "${pids[@]}"); read -r ou0 os0 < <(cpu_ticks "${origin_pids[@]}")
  timeout $((DUR_S + 30)) wrk "${args[@]}" -d"${DUR_S}s" --timeout 5s --latency -s "$BENCH_DIR/wrk-report.lua" "$url" >"$out" 2>&1 || true
  read -r u1 s1 < <(cpu_ticks "${pids[@]}"); read -r ou1 os1 < <(cpu_ticks "${origin_pids[@]}")
  r1=$(origin_requests); a1=$(nginx_status "${PORT[direct]}" 1)
  if ((busy)) || build_running; then BUSY=$((BUSY + 1)); log "WARNING: a build was running during this run"; fi

  local req dur p50 p99 e1 e2 e3 e4 non2xx
  # WRKRESULT requests duration_us p50 p99 connect read write status timeout
  res=$(grep '^WRKRESULT' "$out") || { log "$t/$s: wrk produced no result:"; tail -3 "$out" >&2; return; }
  read -r _ req dur p50 p99 e1 e2 e3 non2xx e4 <<<"$res"
  ((req > 0)) || { log "$t/$s: 0 requests completed"; tail -5 "$out" >&2; }
  # Status requests in between: r1 - r0 counts r1 itself; a1 - a0 counts r0, r1 and a1.
  awk -v r="$round" -v s="cache-$s" -v t="$t" -v l="wrk ${args[*]} ${DUR_S}s" -v n="$req" -v d="$dur" -v p50="$p50" -v p99="$p99" \
      -v e=$((e1 + e2 + e3 + e4)) -v x="$non2xx" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v dox=$((ou1 + os1 - ou0 - os0)) \
      -v oc=$((a1 - a0 - 3)) -v orq=$((r1 - r0 - 1)) -v np="${#pids[@]}" -v hz="$CLK_TCK" 'BEGIN {
    us = 1e6 / hz; nn = (n > 0 ? n : 1); d = d / 1e6
    printf "%s,%s,%s,%s,%d,%.3f,%.1f,%d,%d,%d,%d,%d,%d,%.2f,%.2f,%.2f,%d,%d,%d\n", r, s, t, l, n, d, (d > 0 ? n / d : 0), p50, p99, e, x,
      du, ds, (du + ds) * us / nn, du * us / nn, dox * us / nn, oc, orq, np }' >>"$CSV"
  log "$(tail -1 "$CSV" | awk -F, '{printf "r%s %-11s %-8s %9.0f req/s  p50 %6dus  p99 %7dus  err %d/%d  cpu %6.2fus/req (usr %5.2f)  origin requests %d", $1,$2,$3,$7,$8,$9,$10,$11,$14,$15,$18}')"
  local orq; orq=$(tail -1 "$CSV" | cut -d, -f18)
  if ((orq > 10)); then log "WARNING: $t/$s: the origin saw $orq requests during the run: not hits only"; fi
}

# Untimed warm-up per proxy (threads, connections), on cached URLs only.
for t in "${TARGETS[@]}"; do
  for s in $SCENARIOS; do
    timeout $((WARMUP + 10)) wrk -t1 -c10 -d"${WARMUP}s" "http://127.0.0.1:${PORT[$t]}/$s" >/dev/null 2>&1 || true
  done
done

read -r -a SLIST <<<"$SCENARIOS"
nrun=$((${#SLIST[@]} * ${#TARGETS[@]}))
log "targets: ${TARGETS[*]}; $ROUNDS round(s) x $nrun runs x ${DUR_S}s (~$((ROUNDS * nrun * (DUR_S + PAUSE + 1) / 60 + 1)) min)"
for ((round = 1; round <= ROUNDS; round++)); do
  k=$(((round - 1) % ${#TARGETS[@]})); order=("${TARGETS[@]:k}" "${TARGETS[@]:0:k}")   # rotate the order
  for s in "${SLIST[@]}"; do
    for t in "${order[@]}"; do run_one "$round" "$s" "$t"; sleep "$PAUSE"; done
  done
done

# ---------------------------------------------------------------------- report
join() { local sep=$1 out=$2 x; shift 2; for x in "$@"; do out+="$sep$x"; done; echo "$out"; }
versions() {
  local v=() t
  for t in "${TARGETS[@]}"; do
    case $t in
      nginx)   v+=("$(nginx -v 2>&1 | cut -d' ' -f3)") ;;
      varnish) v+=("$(varnishd -V 2>&1 | sed -n '1s/^varnishd (\(varnish-[^ ]*\).*/\1/p')") ;;
      haproxy) v+=("haproxy $(haproxy -v | awk 'NR==1{print $3}')") ;;
      sluice)  v+=("sluice $SLUICE_BIN (HEAD $SLUICE_REV)") ;;
    esac
  done
  join ", " "${v[@]}"
}
storage() {
  local v=() t toml="$SLUICE_CACHE${SLUICE_EXTRA:+ $SLUICE_EXTRA}"
  for t in "${TARGETS[@]}"; do
    case $t in
      nginx)   v+=("nginx proxy_cache files on $STORE_FS${NGINX_CACHE_EXTRA:+ + \`$NGINX_CACHE_EXTRA\`}") ;;
      varnish) v+=("varnish \`-s malloc,256m${VARNISH_ARGS:+ $VARNISH_ARGS}\`") ;;
      haproxy) v+=("HAProxy cache 256 MB") ;;
      sluice)  if [[ -n $toml ]]; then v+=("sluice \`${toml//$'\n'/ }\`"); else v+=("sluice without a cache table"); fi ;;
    esac
  done
  join "; " "${v[@]}"
}
{
  echo "## Cache hits: run $STAMP"
  echo
  echo "- command: \`DURATION=${DUR_S}s ROUNDS=$ROUNDS PROXIES=\"$PROXIES\" SCENARIOS=\"$SCENARIOS\" bench/cache.sh\` (measured: ${TARGETS[*]})"
  echo "- load average before the run: $LOADAVG; timed runs that overlapped a cargo/rustc build: $BUSY of $((ROUNDS * nrun))"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
  echo "- $(versions), $(wrk -v 2>&1 | awk 'NR==1{print $1, $2}')"
  echo "- origin: nginx, \`Cache-Control: max-age=3600\` on every file; caches: $(storage)"
  echo "- CPU µs/req = (utime+stime of all proxy processes after − before) / requests completed (${CLK_TCK} ticks/s);" \
       "origin requests = requests the origin served during the timed runs (sum over rounds; 0 = hits only)"
  echo
  python3 "$BENCH_DIR/summarise.py" table "$CSV"
  echo "Total runtime: $((SECONDS - T0)) s"
} | tee "$OUT/results.md"
log "raw figures: $CSV; tables: $OUT/results.md"
