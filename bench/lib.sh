# shellcheck shell=bash
# Helpers shared by run.sh, cache.sh, policy.sh and hotswap.sh (sourced; not run on its own).
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
tree_pids() { # the PID and its direct children (nginx workers, varnishd's child), from /proc/*/stat
  local root=$1 st line a; echo "$root"
  for st in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$st" || continue; read -ra a <<<"${line##*) }"
    if [[ ${a[1]} == "$root" ]]; then echo "${line%% *}"; fi
  done
}
cpu_ticks() { # "utime stime" (fields 14, 15; all threads) summed over the PIDs given
  local u=0 s=0 p f a
  for p in "$@"; do
    read -r f 2>/dev/null <"/proc/$p/stat" || continue; read -ra a <<<"${f##*) }"
    u=$((u + a[11])); s=$((s + a[12]))
  done
  echo "$u $s"
}
nginx_status() { # port field -> one counter of the origin's stub_status: 1 accepts, 3 requests
  curl -s --max-time 2 "http://127.0.0.1:$1/_status" | awk -v f="$2" 'NR==3{print $f}'
}
