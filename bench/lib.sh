# shellcheck shell=bash
# Helpers shared by run.sh, cache.sh, policy.sh, hotswap.sh, kill.sh and reload.sh (sourced; not run on its own).
# Callers define PID[name] (the process started for `name`) and WORK (its log is $WORK/name.log).

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# True while a compiler runs on this machine: figures taken then are marked.
build_running() { grep -qsxE 'cargo|rustc|cc1|ld|cargo-clippy' /proc/[0-9]*/comm; }

wait_ready() { # name url  (bounded: 100 x 0.1 s)
  for _ in $(seq 100); do
    kill -0 "${PID[$1]}" 2>/dev/null || { tail -5 "$WORK/$1.log" >&2; return 1; }
    curl -fsk -o /dev/null --max-time 1 "$2" && return 0
    sleep 0.1
  done
  return 1
}

# ensure_cmds cmd:package ... : install (as root, with apt-get) the packages of the commands
# that are missing. Keeps the packages' own services (system nginx on :80, haproxy, varnish
# on :6081) from being started by the install: a deny-all policy-rc.d, only if none exists.
ensure_cmds() {
  local c missing=() pkgs=() made_policy=0 rc=0
  for c in "$@"; do
    command -v "${c%%:*}" >/dev/null || { missing+=("${c%%:*}"); pkgs+=("${c#*:}"); }
  done
  ((${#missing[@]})) || return 0
  mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
  [[ $EUID -eq 0 ]] || die "missing: ${missing[*]} (run as root, or apt-get install ${pkgs[*]})"
  log "installing ${pkgs[*]} (missing: ${missing[*]})"
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; } || rc=$?
  if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
  ((rc == 0)) || die "apt-get failed ($rc)"
  for c in "${missing[@]}"; do command -v "$c" >/dev/null || die "still missing after the install: $c"; done
}

free_ports() { # n -> n distinct free TCP ports on 127.0.0.1 (all bound at once, then released)
  python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])' "$1"
}

# nginx config in $WORK/<name>/nginx.conf: foreground, private pid/log/temp dirs, keep-alive,
# no access log; the http block gets the third argument appended.
nginx_conf() { # name workers http-block-body
  local d="$WORK/$1"; mkdir -p "$d"
  cat >"$d/nginx.conf" <<EOF
worker_processes $2;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
$([[ $EUID -eq 0 ]] && echo "user root;")
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 75s; keepalive_requests 1000000;
  client_body_temp_path $d/client_body; proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
$3
}
EOF
}

start() { # name cmd... ; records the PID of the exec'd process itself, output in $WORK/name.log
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PID["$name"]=$!
}

stop_pid() { # pid: TERM, then KILL if it is still there after 3 s (only PIDs the script started)
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
stop_started() { # every process in PID[] (only what the script started)
  local name
  for name in "${!PID[@]}"; do stop_pid "${PID[$name]}"; done
}

# ------------------------------------------------------------- CPU accounting
tree_pids() { # the PID and all its descendants (nginx workers and cache processes, varnishd's
  # child), from one scan of /proc/*/stat (field 4 = parent PID)
  local root=$1 st line a p i=0; local -A kids=(); local -a tree=("$root")
  for st in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$st" || continue; read -ra a <<<"${line##*) }"
    kids[${a[1]}]+=" ${line%% *}"
  done
  while ((i < ${#tree[@]} && i < 10000)); do
    for p in ${kids[${tree[i]}]:-}; do tree+=("$p"); done
    i=$((i + 1))
  done
  printf '%s\n' "${tree[@]}"
}
cpu_ticks() { # "utime stime" (fields 14, 15; all threads) summed over the PIDs given
  local u=0 s=0 p f a
  for p in "$@"; do
    read -r f 2>/dev/null <"/proc/$p/stat" || continue; read -ra a <<<"${f##*) }"
    u=$((u + a[11])); s=$((s + a[12]))
  done
  echo "$u $s"
}
ctx_switches() { # PIDs -> voluntary + involuntary context switches of all their threads so far
  # (/proc/PID/task/*/status). A thread that ended in between is not counted; the proxies
  # keep theirs for their life.
  local p f n=0 k v
  for p in "$@"; do
    for f in /proc/"$p"/task/*/status; do
      while read -r k v; do
        case $k in voluntary_ctxt_switches: | nonvoluntary_ctxt_switches:) n=$((n + v)) ;; esac
      done <"$f" 2>/dev/null || true
    done
  done
  echo "$n"
}
nginx_status() { # port field -> one counter of the origin's stub_status: 1 accepts, 3 requests
  curl -s --max-time 2 "http://127.0.0.1:$1/_status" | awk -v f="$2" 'NR==3{print $f}'
}

# ------------------------------------------------------------- machine-wide CPU
# sys_cpu: sets SYS_BUSY (non-idle jiffies of all CPUs: user+nice+system+irq+softirq+steal from
# the "cpu" line of /proc/stat; guest time is part of user) and SYS_STEAL (steal alone), both
# in USER_HZ ticks (= getconf CLK_TCK), and SYS_UP (seconds since boot, /proc/uptime, 10 ms
# resolution, always with a '.'). No fork, so it can bracket a timed run tightly.
# shellcheck disable=SC2034  # SYS_* are read by the caller
sys_cpu() {
  local us ni sy irq sirq st rest
  read -r _ us ni sy _ _ irq sirq st rest </proc/stat
  SYS_BUSY=$((us + ni + sy + irq + sirq + st)); SYS_STEAL=$st
  read -r SYS_UP rest </proc/uptime
}
# proc_others root-pid: sets OTHERS_TICKS = utime+stime+cutime+cstime (fields 14-17, ticks)
# summed over every process OUTSIDE root's process tree, from a scan of /proc/*/stat, without
# a fork (call it from the shell whose tree is excluded). The difference of two calls is the
# CPU the rest of the machine used in between, exactly (the kernel keeps these figures from
# the scheduler's runtime, not from tick samples): a process that exits in between hands its
# whole time to its parent's cutime/cstime when reaped, so short-lived processes (rustc, cc,
# ld) are counted too. A reap DURING the scan would count the child twice or not at all (a
# 30 s rustc read after or before its parent), so a scan in which a process vanished is
# repeated (at most 5 scans; OTHERS_SCANS says how many). Not seen: processes reaped by a
# parent that ignores SIGCHLD, and interrupts taken while a CPU was idle.
# shellcheck disable=SC2034  # OTHERS_* are read by the caller
proc_others() {
  local root=$1 st line pid p i ok; local -a a sub seen; local -A kids tk
  for OTHERS_SCANS in 1 2 3 4 5; do
    OTHERS_TICKS=0 ok=1 i=0 sub=("$root") seen=(); kids=() tk=()
    for st in /proc/[0-9]*/stat; do
      read -r line 2>/dev/null <"$st" || { ok=0; continue; }
      pid=${line%% *}; read -ra a <<<"${line##*) }"; seen+=("$pid")
      kids[${a[1]}]+=" $pid"; tk[$pid]=$((a[11] + a[12] + a[13] + a[14]))
      OTHERS_TICKS=$((OTHERS_TICKS + tk[$pid]))
    done
    for pid in "${seen[@]}"; do [[ -e /proc/$pid ]] || { ok=0; break; }; done
    ((ok)) && break
  done
  while ((i < ${#sub[@]} && i < 100000)); do   # subtract root's tree
    for p in ${kids[${sub[i]}]:-}; do sub+=("$p"); done
    OTHERS_TICKS=$((OTHERS_TICKS - ${tk[${sub[i]}]:-0})); i=$((i + 1))
  done
}
# run_timed out-file cmd... : runs cmd (stdout+stderr to out-file) under a bash of its own and
# prints that bash's `times`: its own and its waited-for children's user and system CPU
# (getrusage), e.g. "0m0.001s 0m0.000s\n0m3.210s 0m1.020s". The children are `timeout` and the
# load tool (timeout waits for it), so this is the load generator's whole CPU, read after it
# has exited: nothing has to catch the process's /proc/PID/stat just before it goes away.
# LC_ALL=C: `times` writes the locale's decimal point.
run_timed() {
  LC_ALL=C bash -c 'out=$1; shift; "$@" >"$out" 2>&1; times' run_timed "$@"
}
times_ticks() { # `times` output on stdin, CLK_TCK -> the four figures summed, in ticks (rounded)
  awk -v hz="$1" '{ for (i = 1; i <= NF; i++) { split($i, ms, "m"); sub(/s$/, "", ms[2]); t += ms[1] * 60 + ms[2] } }
    END { printf "%d\n", t * hz + 0.5 }'
}

# load_cmd proto seconds conns http_port https_port: sets LOAD_CMD to the load generator for
# `proto` (h1: wrk over cleartext; h2c / h2: h2load over cleartext / TLS) against /small.
load_cmd() {
  case $1 in
    h1) LOAD_CMD=(wrk -t2 -c"$3" -d"${2}s" "http://127.0.0.1:$4/small") ;;
    h2c) LOAD_CMD=(h2load -t2 -c"$3" -m10 -D"$2" "http://127.0.0.1:$4/small") ;;
    h2) LOAD_CMD=(h2load -t2 -c"$3" -m10 -D"$2" "https://127.0.0.1:$5/small") ;;
    *) die "unknown protocol $1 (h1 h2c h2)" ;;
  esac
}

# load_result proto output-file: prints "requests|failures|non-2xx" as wrk (h1) or h2load
# (h2c, h2) reported them in output-file.
load_result() {
  local total failed non2xx codes
  if [[ $1 == h1 ]]; then
    total=$(grep -oE '^ *[0-9]+ requests in' "$2" | grep -oE '[0-9]+' || echo "?")
    non2xx=$(grep -oE 'Non-2xx or 3xx responses: [0-9]+' "$2" | grep -oE '[0-9]+$' || echo 0)
    failed=$(grep -E 'Socket errors' "$2" | sed 's/^ *Socket errors: //' || true)
    failed=${failed:-0}
  else
    total=$(grep -oE '^requests: [0-9]+ total' "$2" | grep -oE '[0-9]+' || echo "?")
    failed=$(grep -oE '[0-9]+ failed, [0-9]+ errored, [0-9]+ timeout' "$2" || echo "?")
    codes=$(grep -E '^status codes:' "$2" || echo "")
    non2xx=$(awk -F'[ ,]+' '/^status codes:/ {print $5 + $7 + $9}' <<<"$codes")
  fi
  echo "$total|$failed|${non2xx:-?}"
}
