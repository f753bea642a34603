#!/usr/bin/env bash
# Whole-proxy cost of the Wasm policy: CPU per request of sluice deciding every request with
# the built-in default policy in Wasm, with a fresh instance per request (`reuse = 1`) and
# with reused instances (`reuse = $REUSE`, default 1000), against the same build deciding with
# the native Rust copy of that policy (`[policy] native = true`). Small (100 B) responses over
# keep-alive HTTP/1.1, one loopback nginx origin. See bench/README.md ("Policy cost") and
# bench/RESULTS.md ("Step 2").
#
#   bench/policy.sh                        # defaults: DURATION=15s ROUNDS=3 (~3 min + build)
#   DURATION=3s ROUNDS=1 bench/policy.sh   # smoke run
#
# Env: DURATION (seconds), ROUNDS, VARIANTS ("native fresh reuse"), REUSE (1000: requests per
#      instance in the reuse variant), CONNS (50), THREADS (2), WARMUP (2s), PAUSE (1s),
#      SLUICE_BIN (default: build target/release/sluice with cargo first), KEEP_TMP=1.
# Output: a markdown table on stdout and in bench/out/policy-<stamp>/results.md, every run in
#         runs.csv alongside, and the process logs.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
DUR_S=${DURATION:-15}; DUR_S=${DUR_S%s}
ROUNDS=${ROUNDS:-3}
VARIANTS=${VARIANTS:-native fresh reuse}
REUSE=${REUSE:-1000}
CONNS=${CONNS:-50}; THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}; WARMUP=${WARMUP%s}; PAUSE=${PAUSE:-1}
[[ $DUR_S =~ ^[0-9]+$ && $WARMUP =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ && $REUSE =~ ^[0-9]+$ ]] \
  || { echo "DURATION/WARMUP/ROUNDS/REUSE must be whole numbers" >&2; exit 2; }
((REUSE >= 2)) || { echo "REUSE must be at least 2 (reuse = 1 is the fresh variant)" >&2; exit 2; }

. "$BENCH_DIR/lib.sh"

for c in nginx wrk curl python3; do
  command -v "$c" >/dev/null || die "missing $c (apt-get install nginx wrk curl python3; bench/run.sh installs them as root)"
done

T0=$SECONDS
if [[ -z ${SLUICE_BIN:-} ]]; then
  log "building target/release/sluice (cargo build --release -p sluice)"
  (cd "$REPO_ROOT" && cargo build --release -p sluice --locked 2>&1 | tail -1) >&2
  SLUICE_BIN=target/release/sluice
fi
[[ $SLUICE_BIN == /* ]] || SLUICE_BIN="$REPO_ROOT/$SLUICE_BIN"
[[ -x $SLUICE_BIN ]] || die "no executable at $SLUICE_BIN"
T_BUILD=$((SECONDS - T0))

build_running && log "WARNING: a build (cargo/rustc/cc) is running: it competes for the 2 cores and skews every figure"
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
REV="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo no-commit)$(cd "$REPO_ROOT" && git diff --quiet HEAD -- host 2>/dev/null || echo '+uncommitted host/ changes')"
STAMP=$(date +%Y%m%d-%H%M%S)
OUT="$BENCH_DIR/out/policy-$STAMP"; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/sluice-policy-bench.XXXXXX); chmod 755 "$WORK"
CSV="$OUT/runs.csv"
declare -A PID=() PORT=() ADMIN=()

cleanup() {
  local name pid
  for name in "${!PID[@]}"; do          # only the processes this script started
    pid=${PID[$name]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  cp "$WORK"/*.log "$WORK"/*.toml "$OUT"/ 2>/dev/null || true
  [[ ${KEEP_TMP:-0} == 1 ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ ports, files, configs
read -r -a FREE < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(7)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
PORT[origin]=${FREE[0]}
i=1; for v in $VARIANTS; do PORT[$v]=${FREE[i]}; ADMIN[$v]=${FREE[i + 1]}; i=$((i + 2)); done
((i <= 7)) || die "at most 3 variants"

mkdir -p "$WORK/www" "$WORK/origin"
head -c 100 /dev/zero | tr '\0' 's' >"$WORK/www/small"
cat >"$WORK/origin/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/origin/nginx.pid;
error_log $WORK/origin/error.log warn;
$([[ $EUID -eq 0 ]] && echo "user root;")
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 75s; keepalive_requests 1000000;
  client_body_temp_path $WORK/origin/cb; proxy_temp_path $WORK/origin/p;
  fastcgi_temp_path $WORK/origin/f; uwsgi_temp_path $WORK/origin/u; scgi_temp_path $WORK/origin/s;
  server { listen 127.0.0.1:${PORT[origin]}; root $WORK/www; location / { } }
}
EOF

for v in $VARIANTS; do
  case $v in
    native) policy="native = true" ;;
    fresh)  policy="instances = { reuse = 1 }" ;;   # a new instance per request
    reuse)  policy="instances = { reuse = $REUSE }" ;;
    *) die "unknown variant $v (native, fresh, reuse)" ;;
  esac
  cat >"$WORK/sluice-$v.toml" <<EOF
[[listener]]
address = "127.0.0.1:${PORT[$v]}"

[[pool]]
name = "origin"
endpoints = [{ address = "127.0.0.1:${PORT[origin]}" }]

[proxy]
default_pool = "origin"

[admin]
address = "127.0.0.1:${ADMIN[$v]}"

[log]
level = "warn"
access_log = false

# the built-in default policy
[policy]
watch = false
$policy
EOF
done

# ------------------------------------------------------------------ start
start() { local name=$1; shift; "$@" >"$WORK/$name.log" 2>&1 & PID[$name]=$!; }
start origin nginx -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf"
wait_ready origin "http://127.0.0.1:${PORT[origin]}/small" || die "origin nginx did not start"
# One fresh compiled-artifact cache for all variants, so no variant depends on what an
# earlier run left in the user's cache (the first start compiles, the others deserialize).
export SLUICE_CACHE_DIR="$WORK/cache"
for v in $VARIANTS; do
  start "$v" "$SLUICE_BIN" run --config "$WORK/sluice-$v.toml"
  wait_ready "$v" "http://127.0.0.1:${PORT[$v]}/small" || die "sluice ($v) not ready (log: $OUT/$v.log)"
  got=$(curl -s --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:${PORT[$v]}/small")
  [[ $got == "200 100" ]] || die "sluice ($v): got '$got' for /small, want '200 100'"
  log "$v ready (pid ${PID[$v]}, :${PORT[$v]}, admin :${ADMIN[$v]}; policy: $(curl -s --max-time 2 "http://127.0.0.1:${ADMIN[$v]}/policy" \
    | python3 -c 'import json,sys; a=json.load(sys.stdin)["active"]; print(a["source"], "reuse", a["reuse"])'))"
done

# ---------------------------------------------------------------- measure
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { local f a; read -r f <"/proc/$1/stat"; read -ra a <<<"${f##*) }"; echo "${a[11]} ${a[12]}"; }
policy_calls() { curl -s --max-time 2 "http://127.0.0.1:${ADMIN[$1]}/policy" | python3 -c 'import json,sys; print(json.load(sys.stdin)["active"]["calls"])'; }

for v in $VARIANTS; do   # untimed warm-up: upstream connections, instance slots, page cache
  timeout $((WARMUP + 10)) wrk -t1 -c10 -d"${WARMUP}s" "http://127.0.0.1:${PORT[$v]}/small" >/dev/null 2>&1 || true
done

echo "round,variant,requests,duration_s,rps,p50_us,p99_us,errors,non2xx,utime_ticks,stime_ticks,cpu_us_per_req,user_us_per_req,policy_calls_per_req,build_running" >"$CSV"
read -r -a VLIST <<<"$VARIANTS"
log "variants: ${VLIST[*]}; $ROUNDS round(s) x ${#VLIST[@]} runs x ${DUR_S}s (~$(((ROUNDS * ${#VLIST[@]} * (DUR_S + PAUSE + 1)) / 60 + 1)) min)"
for ((round = 1; round <= ROUNDS; round++)); do
  k=$(((round - 1) % ${#VLIST[@]})); order=("${VLIST[@]:k}" "${VLIST[@]:0:k}")   # rotate the order
  for v in "${order[@]}"; do
    busy=0; if build_running; then busy=1; fi
    c0=$(policy_calls "$v"); read -r u0 s0 < <(cpu_ticks "${PID[$v]}")
    timeout $((DUR_S + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${DUR_S}s" --timeout 5s -s "$BENCH_DIR/wrk-report.lua" \
      "http://127.0.0.1:${PORT[$v]}/small" >"$WORK/load.out" 2>&1 || true
    read -r u1 s1 < <(cpu_ticks "${PID[$v]}"); c1=$(policy_calls "$v")
    if build_running; then busy=1; fi
    res=$(grep '^WRKRESULT' "$WORK/load.out") || { tail -3 "$WORK/load.out" >&2; die "wrk produced no result"; }
    read -r _ req dur p50 p99 e1 e2 e3 non2xx e4 <<<"$res"
    awk -v r="$round" -v t="$v" -v n="$req" -v d="$dur" -v p50="$p50" -v p99="$p99" -v e=$((e1 + e2 + e3 + e4)) \
        -v x="$non2xx" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v calls=$((c1 - c0)) -v hz="$CLK_TCK" -v b="$busy" 'BEGIN {
      us = 1e6 / hz; nn = (n > 0 ? n : 1); d = d / 1e6
      printf "%s,%s,%d,%.3f,%.1f,%d,%d,%d,%d,%d,%d,%.2f,%.2f,%.3f,%d\n", r, t, n, d, (d > 0 ? n / d : 0), p50, p99, e, x,
        du, ds, (du + ds) * us / nn, du * us / nn, calls / nn, b }' >>"$CSV"
    log "$(tail -1 "$CSV" | awk -F, '{printf "r%s %-7s %8.0f req/s  p50 %5dus  p99 %6dus  err %d/%d  cpu %6.2fus/req (usr %5.2f)  policy calls/req %.3f%s", $1,$2,$5,$6,$7,$8,$9,$12,$13,$14, ($15 ? "  BUILD RUNNING" : "")}')"
    sleep "$PAUSE"
  done
done

# ---------------------------------------------------------------------- report
{
  echo "### Run $STAMP"
  echo
  echo "- command: \`DURATION=${DUR_S}s ROUNDS=$ROUNDS bench/policy.sh\` (variants: $VARIANTS; reuse = $REUSE)"
  echo "- sluice: $SLUICE_BIN, HEAD $REV, built $(date -r "$SLUICE_BIN" '+%F %T')"
  echo "- load: \`wrk -t$THREADS -c$CONNS -d${DUR_S}s\` on \`/small\` (100 B, keep-alive) through each sluice to one nginx origin (1 worker)"
  echo "- load average before: $LOADAVG; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- CPU µs/req = (utime+stime of the sluice process after − before) / requests completed (${CLK_TCK} ticks/s)"
  echo
  python3 - "$CSV" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
variants = list(dict.fromkeys(r["variant"] for r in rows))
med = lambda v, k: statistics.median(float(r[k]) for r in rows if r["variant"] == v)
base = "native" if "native" in variants else variants[0]
print(f"| variant | req/s | p50 | p99 | CPU µs/req (user) | CPU ÷ {base} | user ÷ {base} | policy calls/req | errors / non-2xx | runs during a build |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for v in variants:
    rs = [r for r in rows if r["variant"] == v]
    errs = sum(int(r["errors"]) for r in rs); non2xx = sum(int(r["non2xx"]) for r in rs)
    busy = sum(int(r["build_running"]) for r in rs)
    print(f"| {v} | {med(v,'rps'):,.0f} | {med(v,'p50_us'):.0f} µs | {med(v,'p99_us')/1000:.2f} ms | "
          f"{med(v,'cpu_us_per_req'):.2f} ({med(v,'user_us_per_req'):.2f}) | "
          f"{med(v,'cpu_us_per_req')/med(base,'cpu_us_per_req'):.3f} | {med(v,'user_us_per_req')/med(base,'user_us_per_req'):.3f} | "
          f"{med(v,'policy_calls_per_req'):.2f} | {errs} / {non2xx} | {busy} of {len(rs)} |")
print()
print("Per round (CPU µs/req):", "; ".join(
    f"r{r['round']} {r['variant']} {float(r['cpu_us_per_req']):.2f}" for r in rows))
EOF
  echo
  echo "Measured in $((SECONDS - T0 - T_BUILD)) s (plus $T_BUILD s build check)."
} | tee "$OUT/results.md"
log "raw figures: $CSV"
