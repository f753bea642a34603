# Helpers shared by run.sh, policy.sh and hotswap.sh (sourced; not run on its own).
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
