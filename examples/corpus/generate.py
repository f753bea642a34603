"""Writes examples/corpus/<name>.jsonl: each case's expected decision is what the Rust example
decides (run through `sluice policy test`), in full, so every language must match it exactly."""
import json, subprocess, sys
sluice, name, wasm, out = sys.argv[1:5]
cases = {
 "path-routing": [
  ("GET https://example.com/api/v1/users", {}, None),
  ("POST https://example.com/api/items", {"content-type": "application/json"}, None),
  ("GET https://example.com/api/", {}, None),
  ("GET https://example.com/api", {}, None),
  ("GET https://example.com/apis/x", {}, None),
  ("GET https://example.com/static/app.js", {}, None),
  ("HEAD http://example.com/static/img/logo.png?v=3", {}, None),
  ("GET https://example.com/static", {}, None),
  ("GET https://example.com/", {}, None),
  ("GET http://www.example.org/index.html?b=2&a=1", {"accept": "text/html"}, "192.0.2.9"),
  ("DELETE https://example.com/API/v1/users", {}, None),
  ("GET https://example.com//api/x", {}, None),
 ],
 "sticky-ab": [
  ("GET https://example.com/", {"cookie": "ab=0123456789abcdef"}, None),
  ("GET https://example.com/", {"cookie": "a=1; ab=visitor-7; b=2"}, None),
  ("GET https://example.com/", {"cookie": "xab=1; ab=second"}, None),
  ("GET https://example.com/", {"cookie": "ab="}, "192.0.2.7"),
  ("GET https://example.com/", {"cookie": "ab=\"quoted\""}, None),
  ("GET https://example.com/", {"user-agent": "Mozilla/5.0 (X11; Linux x86_64)"}, "192.0.2.7"),
  ("GET https://example.com/", {"user-agent": "Mozilla/5.0 (X11; Linux x86_64)"}, "192.0.2.8"),
  ("GET https://example.com/", {"user-agent": "curl/8.5.0"}, "2001:db8::1"),
  ("GET https://example.com/", {}, "10.0.0.1"),
  ("GET https://example.com/cart", {"user-agent": "ünïcode-agent/1"}, "198.51.100.200"),
  ("POST https://example.com/checkout", {"cookie": "session=s; AB=upper"}, "203.0.113.5"),
 ],
}[name]
with open(out, "w") as f:
    f.write(f"# The shared corpus for {name}: every language's example must decide exactly like\n")
    f.write(f"# examples/{name} (Rust). Regenerate: python3 examples/corpus/generate.py SLUICE NAME RUST_WASM OUT.\n")
    for req, headers, client in cases:
        cmd = [sluice, "policy", "test", wasm, "-r", req]
        for k, v in headers.items():
            cmd += ["-H", f"{k}: {v}"]
        if client:
            cmd += ["--client", client]
        got = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
        line = {"request": req}
        if headers: line["headers"] = headers
        if client: line["client"] = client
        line["expect"] = got
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
print(out, len(cases))
