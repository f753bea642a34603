#!/usr/bin/env python3
"""Fleet benchmark ([cache.shared]): sluice nodes sharing one loopback redis-server, in front
of a loopback nginx origin. Three figures (bench/README.md, "Fleet"):

  cost     CPU per request and latency of a memory hit, a shared-tier (Redis) hit and an
           origin fetch through the cache, as ratios to the memory hit, in one run (wrk, one
           node at a time, ROUNDS rounds interleaved; medians).
  purge    time from a tag purge on node 1 to the last of nodes 2 and 3 answering a miss
           (a client polls both over kept-alive connections; PURGES times).
  saved    origin requests for 3 nodes on a working set larger than one node's memory cache,
           shared tier off and on (the same seeded request sequence per node, bounded count).
  coalesce origin requests when 3 nodes x 20 clients ask for one new key at once (an origin
           that takes 200 ms), shared tier off and on, over COALESCE_KEYS keys.

  bench/fleet.py                       # defaults
  ROUNDS=1 DURATION=3 bench/fleet.py   # smoke run
Env: SLUICE_BIN (target/release/sluice), DURATION (8 s per wrk run), ROUNDS (3), KEYS (2000),
     PURGES (20), SAVED_REQUESTS (4000 per node), SCENARIOS ("cost purge saved").
Only loopback; every process started here is stopped here, by PID; every loop is bounded.
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.environ.get("SLUICE_BIN", os.path.join(REPO, "target/release/sluice"))
DURATION = int(os.environ.get("DURATION", "8"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
KEYS = int(os.environ.get("KEYS", "2000"))
PURGES = int(os.environ.get("PURGES", "20"))
SAVED_REQUESTS = int(os.environ.get("SAVED_REQUESTS", "4000"))
SCENARIOS = os.environ.get("SCENARIOS", "cost purge saved coalesce").split()
COALESCE_KEYS = int(os.environ.get("COALESCE_KEYS", "10"))
HZ = os.sysconf("SC_CLK_TCK")
WORK = tempfile.mkdtemp(prefix="sluice-fleet-")
STARTED = []  # Popen objects, stopped at exit


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, file=sys.stderr, flush=True)


def free_ports(n):
    ss = [socket.socket() for _ in range(n)]
    for s in ss:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in ss]
    for s in ss:
        s.close()
    return ports


def start(name, cmd):
    out = open(os.path.join(WORK, name + ".log"), "w")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    p.name = name
    STARTED.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    STARTED.remove(p)


def wait_port(port, what):
    for _ in range(200):  # 10 s
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not come up on port {port}; logs in {WORK}")


def cpu_ticks(pids):
    t = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                a = f.read().rsplit(")", 1)[1].split()
            t += int(a[11]) + int(a[12])
        except OSError:
            pass
    return t


def tree(pid):
    """pid and its descendants (nginx workers)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except OSError:
                pass
    out, i = [pid], 0
    while i < len(out):
        out += kids.get(out[i], [])
        i += 1
    return out


def machine_busy():
    with open("/proc/stat") as f:
        a = [int(x) for x in f.readline().split()[1:]]
    return a[0] + a[1] + a[2] + a[5] + a[6] + a[7]


# ------------------------------------------------------------------ servers

def redis():
    (port,) = free_ports(1)
    p = start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--dir", WORK])
    wait_port(port, "redis-server")
    return p, port


def nginx(body_bytes):
    port, = free_ports(1)
    d = os.path.join(WORK, f"nginx-{port}")
    os.makedirs(d)
    body = "x" * body_bytes
    conf = f"""worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  client_body_temp_path {d}/cb; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
  uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  server {{ listen 127.0.0.1:{port};
    location = /_status {{ stub_status; }}
    location / {{ add_header Cache-Control "max-age=3600" always; add_header Surrogate-Key "all" always;
      return 200 "{body}"; }} }} }}
"""
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(conf)
    p = start(f"nginx-{port}", ["nginx", "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"])
    wait_port(port, "nginx")
    return p, port


def nginx_requests(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/_status")
    lines = c.getresponse().read().decode().splitlines()
    return int(lines[2].split()[2])


def node(name, origin, redis_port, capacity, ns, shared=True):
    http_port, admin_port = free_ports(2)
    conf = f"""[[listener]]
address = "127.0.0.1:{http_port}"
[[pool]]
name = "web"
endpoints = ["127.0.0.1:{origin}"]
[admin]
address = "127.0.0.1:{admin_port}"
[log]
access_log = false
level = "warn"
[cache]
capacity = "{capacity}"
max_object_size = "8KiB"
"""
    if shared:
        conf += f"""[cache.shared]
url = "redis://127.0.0.1:{redis_port}"
namespace = "{ns}"
node = "{name}"
"""
    path = os.path.join(WORK, f"{name}-{ns}.toml")
    with open(path, "w") as f:
        f.write(conf)
    p = start(f"{name}-{ns}", [SLUICE, "run", "--config", path])
    wait_port(admin_port, f"sluice {name}")
    p.http, p.admin = http_port, admin_port
    if shared:
        for _ in range(200):
            if stats(p)["shared"]["state"] == "closed":
                break
            time.sleep(0.05)
    return p


def call(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path, body=body, headers={"host": "bench.test"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def stats(p):
    return json.loads(call(p.admin, "GET", "/stats")[1])


def fill(p, keys):
    """Requests every key once over one kept-alive connection."""
    c = http.client.HTTPConnection("127.0.0.1", p.http, timeout=5)
    for k in keys:
        c.request("GET", f"/k{k}", headers={"host": "bench.test"})
        c.getresponse().read()
    c.close()


def wait_stores(p, n):
    for _ in range(600):  # 30 s
        if stats(p)["shared"]["stores"] >= n:
            return
        time.sleep(0.05)
    sys.exit(f"node {p.name}: fewer than {n} stores written to redis")


# ------------------------------------------------------------------ cost

WRK_LUA = """
local n = tonumber(os.getenv("KEYS"))
math.randomseed(42)
request = function() return wrk.format("GET", "/k" .. math.random(1, n), {Host = "bench.test"}) end
done = function(summary, latency, requests)
  io.write(string.format("WRKRESULT %d %d %d %d %d\\n", summary.requests, latency:percentile(50),
    latency:percentile(99), summary.errors.status, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
end
"""


def wrk(p, keys, watch_pids):
    lua = os.path.join(WORK, "keys.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA)
    before = {k: cpu_ticks(v) for k, v in watch_pids.items()}
    busy0, t0 = machine_busy(), time.time()
    out = subprocess.run(["timeout", str(DURATION + 10), "wrk", "-t1", "-c16", f"-d{DURATION}s",
                          "-s", lua, f"http://127.0.0.1:{p.http}/"],
                         env=dict(os.environ, KEYS=str(keys)), capture_output=True, text=True).stdout
    busy1, t1 = machine_busy(), time.time()
    after = {k: cpu_ticks(v) for k, v in watch_pids.items()}
    line = next(l for l in out.splitlines() if l.startswith("WRKRESULT"))
    n, p50, p99, bad, errs = (int(x) for x in line.split()[1:])
    cpu = {k: (after[k] - before[k]) / HZ for k in watch_pids}
    ours = sum(cpu.values())
    return {"requests": n, "p50_us": p50, "p99_us": p99, "bad": bad + errs,
            "cpu_us_per_req": {k: 1e6 * v / max(n, 1) for k, v in cpu.items()},
            "others_cpu_s": max(0.0, (busy1 - busy0) / HZ - ours), "secs": t1 - t0}


def cost():
    rp, rport = redis()
    op, oport = nginx(1024)
    keys = range(1, KEYS + 1)
    local = node("local", oport, rport, "256MiB", "cost", shared=False)
    writer = node("writer", oport, rport, "256MiB", "cost")
    l2 = node("l2", oport, rport, "64KiB", "cost")
    origin = node("origin", oport, rport, "64KiB", "cost-o", shared=False)
    fill(local, keys)
    fill(writer, keys)
    wait_stores(writer, KEYS)
    stop(writer)
    rows = {"memory hit": [], "shared hit": [], "origin fetch": []}
    for r in range(ROUNDS):
        for label, p in (("memory hit", local), ("shared hit", l2), ("origin fetch", origin)):
            s0 = stats(p)
            o0 = nginx_requests(oport)
            res = wrk(p, KEYS, {"sluice": tree(p.pid), "redis": [rp.pid], "nginx": tree(op.pid)})
            s1 = stats(p)
            res["origin_reqs"] = nginx_requests(oport) - o0 - 1
            res["shared_hits"] = (s1.get("shared") or {}).get("hits", 0) - (s0.get("shared") or {}).get("hits", 0)
            # The cache's `hits` count both tiers; the memory's own are the rest.
            res["memory_hits"] = s1["cache"]["hits"] - s0["cache"]["hits"] - res["shared_hits"]
            rows[label].append(res)
            log(f"round {r + 1} {label}: {res['requests']} req, sluice {res['cpu_us_per_req']['sluice']:.1f} us/req,"
                f" p50 {res['p50_us']} us, shared hits {res['shared_hits']}, origin {res['origin_reqs']}")
    for p in (local, l2, origin, op, rp):
        stop(p)
    med = lambda label, f: statistics.median(f(x) for x in rows[label])
    base_cpu = med("memory hit", lambda x: x["cpu_us_per_req"]["sluice"])
    base_p50 = med("memory hit", lambda x: x["p50_us"])
    print(f"\n### Shared-tier hit cost ({KEYS} keys of 1 KiB, wrk -t1 -c16 -d{DURATION}s, {ROUNDS} rounds, medians)\n")
    print("| served as | req/s | sluice CPU µs/req | ×memory | redis CPU µs/req | nginx CPU µs/req | p50 µs | ×memory | p99 µs | shared hits | memory hits | origin reqs | failed | CPU s outside sluice/redis/nginx (wrk's included) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label in rows:
        c = med(label, lambda x: x["cpu_us_per_req"]["sluice"])
        p50 = med(label, lambda x: x["p50_us"])
        print(f"| {label} | {med(label, lambda x: x['requests'] / x['secs']):,.0f} | {c:.1f} | {c / base_cpu:.2f} |"
              f" {med(label, lambda x: x['cpu_us_per_req']['redis']):.1f} | {med(label, lambda x: x['cpu_us_per_req']['nginx']):.1f} |"
              f" {p50:.0f} | {p50 / base_p50:.2f} | {med(label, lambda x: x['p99_us']):.0f} |"
              f" {med(label, lambda x: x['shared_hits']):.0f} | {med(label, lambda x: x['memory_hits']):.0f} |"
              f" {med(label, lambda x: x['origin_reqs']):.0f} | {sum(x['bad'] for x in rows[label])} |"
              f" {med(label, lambda x: x['others_cpu_s']):.2f} |")


# ------------------------------------------------------------------ purge

def purge():
    rp, rport = redis()
    op, oport = nginx(1024)
    nodes = [node(f"n{i}", oport, rport, "64MiB", "purge") for i in (1, 2, 3)]
    conns = [http.client.HTTPConnection("127.0.0.1", n.http, timeout=5) for n in nodes]

    def get(i):
        conns[i].request("GET", "/p", headers={"host": "bench.test"})
        r = conns[i].getresponse()
        r.read()
        return r.getheader("cache-status") or ""

    times = []
    for _ in range(PURGES):
        for i in range(3):
            get(i)  # stored on node 1 (or read from the shared tier), then in every memory cache
        for i in range(3):
            for _ in range(100):
                if "hit" in get(i):
                    break
                time.sleep(0.01)
        t0 = time.perf_counter()
        r, body = call(nodes[0].admin, "POST", "/cache/purge", b'{"tag": "all"}')
        assert json.loads(body)["fleet"]["sent"], body
        last = 0.0
        for i in (1, 2):
            for _ in range(100000):  # bounded: ~10 s of polls
                cs = get(i)
                if "fwd=" in cs or "shared" in cs:
                    break
            last = max(last, time.perf_counter() - t0)
        times.append(last * 1000)
    for p in nodes + [op, rp]:
        stop(p)
    times.sort()
    print(f"\n### Purge fan-out (3 nodes, tag purge on node 1, {PURGES} purges)\n")
    print("| purge to the last node's miss | median ms | p90 ms | max ms |")
    print("|---|---|---|---|")
    print(f"| including the purge call's own round trip | {statistics.median(times):.2f} |"
          f" {times[int(len(times) * 0.9) - 1]:.2f} | {times[-1]:.2f} |")


# ------------------------------------------------------------------ saved

def saved():
    results = {}
    for shared in (False, True):
        rp, rport = redis()
        op, oport = nginx(3000)
        ns = "saved-on" if shared else "saved-off"
        nodes = [node(f"n{i}", oport, rport, "1MiB", ns, shared=shared) for i in (1, 2, 3)]
        before = nginx_requests(oport)

        def load(n, seed):
            rnd = random.Random(seed)
            c = http.client.HTTPConnection("127.0.0.1", n.http, timeout=10)
            for _ in range(SAVED_REQUESTS):
                c.request("GET", f"/k{rnd.randint(1, KEYS)}", headers={"host": "bench.test"})
                r = c.getresponse()
                r.read()
                assert r.status == 200
            c.close()

        ts = [threading.Thread(target=load, args=(n, i)) for i, n in enumerate(nodes)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        origin = nginx_requests(oport) - before - 1
        shared_hits = sum((stats(n).get("shared") or {}).get("hits", 0) for n in nodes)
        memory_hits = sum(stats(n)["cache"]["hits"] for n in nodes) - shared_hits
        results[shared] = (origin, shared_hits, memory_hits)
        for p in nodes + [op, rp]:
            stop(p)
    total = 3 * SAVED_REQUESTS
    print(f"\n### Origin requests, 3 nodes, working set {KEYS} × 3 KB (~{KEYS * 4 // 1024} MiB stored) > 1 MiB memory cache per node, {total} requests\n")
    print("| shared tier | origin requests | per client request | memory hits | shared hits |")
    print("|---|---|---|---|---|")
    for shared, (o, sh, mh) in results.items():
        print(f"| {'on' if shared else 'off'} | {o} | {o / total:.3f} | {mh} | {sh} |")
    off, on = results[False][0], results[True][0]
    print(f"\nOrigin requests saved by the shared tier: {off - on} ({100 * (off - on) / max(off, 1):.0f} %).")


# ------------------------------------------------------------------ coalesce

def slow_origin():
    """A threaded origin in this process: 200 ms per request, cacheable, counted."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    count = {"n": 0}
    lock = threading.Lock()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with lock:
                count["n"] += 1
            time.sleep(0.2)
            body = b"slow"
            self.send_response(200)
            self.send_header("cache-control", "max-age=600")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, count


def coalesce():
    results = {}
    for shared in (False, True):
        rp, rport = redis()
        srv, count = slow_origin()
        ns = "co-on" if shared else "co-off"
        nodes = [node(f"n{i}", srv.server_address[1], rport, "64MiB", ns, shared=shared) for i in (1, 2, 3)]
        failed = 0
        for k in range(COALESCE_KEYS):
            barrier = threading.Barrier(60)
            statuses = []

            def client(n):
                c = http.client.HTTPConnection("127.0.0.1", n.http, timeout=10)
                c.connect()
                barrier.wait()
                c.request("GET", f"/c{k}", headers={"host": "bench.test"})
                r = c.getresponse()
                r.read()
                statuses.append(r.status)

            ts = [threading.Thread(target=client, args=(n,)) for n in nodes for _ in range(20)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            failed += sum(1 for s in statuses if s != 200)
        results[shared] = (count["n"], failed)
        for p in nodes + [rp]:
            stop(p)
        srv.shutdown()
    print(f"\n### Coalescing across nodes (3 nodes × 20 clients at once on one new key, origin 200 ms, {COALESCE_KEYS} keys)\n")
    print("| shared tier | origin requests | per key | failed |")
    print("|---|---|---|---|")
    for shared, (n, f) in results.items():
        print(f"| {'on' if shared else 'off'} | {n} | {n / COALESCE_KEYS:.1f} | {f} |")


def main():
    for cmd in ("redis-server", "nginx", "wrk"):
        if not shutil.which(cmd):
            sys.exit(f"{cmd} not found (Debian packages redis-server, nginx, wrk)")
    if not os.path.exists(SLUICE):
        sys.exit(f"{SLUICE}: build it with cargo build --release -p sluice")
    with open("/proc/loadavg") as f:
        print(f"load average at start: {' '.join(f.read().split()[:3])}; {os.cpu_count()} CPUs; sluice {SLUICE}")
    try:
        for s in SCENARIOS:
            {"cost": cost, "purge": purge, "saved": saved, "coalesce": coalesce}[s]()
    finally:
        for p in list(STARTED):
            stop(p)
        with open("/proc/loadavg") as f:
            print(f"\nload average at end: {' '.join(f.read().split()[:3])}")
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
