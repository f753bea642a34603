#!/usr/bin/env python3
"""Helpers for bench/run.sh (standard library only).

  summarise.py percentiles H2LOAD_LOG   -> "p50_us p99_us" from h2load --log-file
  summarise.py table RUNS_CSV           -> markdown tables (medians over rounds)
  summarise.py perf-groups REPORT       -> "group share; ..." of a `perf report --sort
                                           dso,symbol` text: samples summed per component

RUNS_CSV comes from run.sh or cache.sh; cache.sh's scenarios (cache-*) have an
origin_requests column and get a table of their own shape.
"""
import csv
import statistics
import sys
from collections import OrderedDict

TITLES = {
    "small": "1. small (100 B) response, HTTP/1.1 keep-alive",
    "16k": "2. 16 KiB response, HTTP/1.1 keep-alive",
    "1m": "3. 1 MiB response, HTTP/1.1 keep-alive",
    "newconn": "4. new TCP connection per request (`Connection: close`), 100 B",
    "latency": "5. single connection, latency (100 B)",
    "https": "6. HTTPS (TLS 1.3, HTTP/1.1) keep-alive, 100 B",
    "h2": "7. HTTP/2 over TLS, 100 B",
    "hit": "8. cache hit, 100 B (`/hit/small`, origin `Cache-Control: public, max-age=3600`), HTTP/1.1 keep-alive",
    "cache-small": "Cache hit, 100 B, HTTP/1.1 keep-alive",
    "cache-16k": "Cache hit, 16 KiB, HTTP/1.1 keep-alive",
    "cache-1m": "Cache hit, 1 MiB, HTTP/1.1 keep-alive",
}
TARGET_ORDER = ["nginx", "varnish", "haproxy", "sluice", "sluice-b", "sluice-nocache", "sluice-native", "direct"]
BASELINES = ("nginx", "haproxy")  # "best" = the better of these two per figure

def percentiles(path):
    # h2load log columns: start_us <TAB> status <TAB> elapsed_us
    vals = []
    with open(path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                vals.append(int(parts[2]))
    if not vals:
        print("0 0")
        return
    vals.sort()

    def pct(p):
        return vals[min(len(vals) - 1, int(len(vals) * p / 100.0))]

    print(pct(50), pct(99))


def fmt_lat(us):
    return f"{us:,.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def table(path):
    with open(path) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        has_quiet = "quiet" in (reader.fieldnames or [])
        has_csw = "proxy_csw_per_req" in (reader.fieldnames or [])
    # scenario -> target -> list of rows (one per round)
    by = OrderedDict()
    for r in rows:
        by.setdefault(r["scenario"], {}).setdefault(r["target"], []).append(r)

    out = []
    for scen, targets in by.items():
        med = {}
        for t, rs in targets.items():
            quiet = [r for r in rs if r.get("quiet") == "1"]
            use = quiet or rs  # medians over the quiet runs when there is any
            m = lambda k: statistics.median(float(r[k]) for r in use)
            med[t] = dict(
                rps=m("rps"), p50=m("p50_us"), p99=m("p99_us"),
                cpu=m("proxy_cpu_us_per_req"), ucpu=m("proxy_user_us_per_req"),
                csw=m("proxy_csw_per_req") if has_csw else float("nan"), ocpu=m("origin_cpu_us_per_req"), oconns=m("origin_conns"),
                err=sum(int(r["errors"]) for r in rs),
                non2xx=sum(int(r["non2xx"]) for r in rs),
                n=len(rs), nq=len(quiet), load=rs[0]["load"],
                orq=sum(int(r.get("origin_requests") or 0) for r in rs),
            )
        order = [t for t in TARGET_ORDER if t in med] + sorted(t for t in med if t not in TARGET_ORDER)
        base = med.get("nginx")
        direct = med.get("direct")
        latency = scen == "latency"

        def added(v):
            return v["p50"] - direct["p50"] if direct else float("nan")

        # The best of nginx and HAProxy per figure: req/s max; CPU, p99, added p50 min.
        bl = [med[t] for t in BASELINES if t in med]
        best = None
        if bl:
            best = dict(rps=max(v["rps"] for v in bl), cpu=min(v["cpu"] for v in bl),
                        p99=min(v["p99"] for v in bl), added=min(added(v) for v in bl))
            who = lambda k, f: next(t for t in BASELINES if t in med and f(med[t]) == best[k])
            best_by = dict(rps=who("rps", lambda v: v["rps"]), cpu=who("cpu", lambda v: v["cpu"]),
                           p99=who("p99", lambda v: v["p99"]), added=who("added", added) if direct else "n/a")
        loads = sorted({v["load"] for t, v in med.items() if t != "direct"})
        out.append(f"### {TITLES.get(scen, scen)}\n")
        quiet_note = "; medians over the quiet runs where a row has any" if has_quiet else ""
        out.append(f"`{'`, `'.join(loads)}`; {max(v['n'] for v in med.values())} round(s){quiet_note}\n")
        cache = scen.startswith("cache-") or scen == "hit"
        qcol = ["quiet runs"] if has_quiet else []
        first = "added p50" if latency else "req/s"
        ratios = [f"{first} ÷ nginx", "CPU ÷ nginx", "p99 ÷ nginx", f"{first} ÷ best", "CPU ÷ best", "p99 ÷ best"]
        if cache:
            head = ["proxy", "req/s", "p99", "CPU µs/req (user)", "origin requests (all rounds)", "errors / non-2xx"]
        elif latency:
            head = ["proxy", "req/s", "p50", "added p50 vs direct", "p99", "CPU µs/req (user)", "origin CPU µs/req", "upstream conns opened", "errors / non-2xx"]
        else:
            head = ["proxy", "req/s", "p99", "CPU µs/req (user)", "origin CPU µs/req", "upstream conns opened", "errors / non-2xx"]
        head += (["ctx switches/req"] if has_csw else []) + qcol + ratios
        out.append("| " + " | ".join(head) + " |")
        out.append("|---|" + "---:|" * (len(head) - 1))
        for t in order:
            v = med[t]
            cells = [t, f"{v['rps']:,.0f}"]
            if latency:
                cells += [fmt_lat(v["p50"]), "—" if t == "direct" else f"{added(v):+,.0f} µs"]
            cells += [fmt_lat(v["p99"]), "—" if t == "direct" else f"{v['cpu']:.1f} ({v['ucpu']:.1f})"]
            if cache:
                cells += [f"{v['orq']:,}"]
            else:
                cells += [f"{v['ocpu']:.1f}", f"{v['oconns']:,.0f}"]
            cells += [f"{v['err']} / {v['non2xx']}"]
            if has_csw:
                cells += ["—" if t == "direct" else f"{v['csw']:.2f}"]
            if has_quiet:
                cells += [f"{v['nq']}/{v['n']}"]
            for b in (base, best):
                if t == "direct" or not b:
                    cells += ["—"] * 3
                    continue
                if latency:
                    b_add = b["added"] if b is best else added(b)
                    lead = ratio(added(v), b_add) if direct else "n/a"
                else:
                    lead = ratio(v["rps"], b["rps"])
                cells += [lead, ratio(v["cpu"], b["cpu"]), ratio(v["p99"], b["p99"])]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        if best:
            k1 = "added p50" if latency else "req/s"
            out.append(f"best: {k1} {best_by['added' if latency else 'rps']}, CPU {best_by['cpu']}, p99 {best_by['p99']}\n")
    print("\n".join(out))


# Component of a sample, by its shared object and symbol: the kernel, the allocator, libc's
# memcpy/memmove, then Rust symbols by crate (the first path segment, generics stripped).
def perf_group(dso, sym):
    if dso == "[kernel.kallsyms]":
        return "kernel"
    if dso == "[vdso]":
        return "vdso (clock_gettime)"
    if sym.startswith(("mi_", "_mi_", "malloc", "free", "_int_malloc", "_int_free", "cfree")):
        return "allocator"
    if "memmove" in sym or "memcpy" in sym or "memset" in sym:
        return "memcpy/memmove"
    if dso.startswith("lib") and ".so" in dso:
        return dso.split(".so")[0]
    name = sym.lstrip("<").split("::")[0].split("<")[0].strip()
    return name or "?"


def perf_groups(path):
    totals = {}
    for line in open(path, errors="replace"):
        parts = line.split()
        if len(parts) < 4 or not parts[0].endswith("%"):
            continue
        while parts[-1] == "-":  # empty IPC columns
            parts.pop()
        share, dso, sym = float(parts[0][:-1]), parts[1], " ".join(parts[3:])
        g = perf_group(dso, sym)
        totals[g] = totals.get(g, 0.0) + share
    top = sorted(totals.items(), key=lambda kv: -kv[1])
    print("; ".join(f"{g} {v:.1f}%" for g, v in top if v >= 0.5))


if __name__ == "__main__":
    cmds = {"percentiles": percentiles, "table": table, "perf-groups": perf_groups}
    if len(sys.argv) != 3 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](sys.argv[2])
