// Unit tests of the SDK's pure parts (UTF-8, request helpers, builders, config parsing) in
// Node, against a stub of the sluice:policy imports: node guest-sdk/js/test.mjs
// (needs rolldown: global, or ROLLDOWN=/path/to/rolldown/dist/index.mjs). The decisions
// themselves are checked against the Rust examples by tests/tests/languages.rs and the corpora.
import { execSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
const here = dirname(fileURLToPath(import.meta.url));
const rolldownPath = process.env.ROLLDOWN || join(execSync("npm root -g").toString().trim(), "rolldown/dist/index.mjs");
const { rolldown } = await import(pathToFileURL(rolldownPath).href);
const STUB = `export const method=()=>"GET", scheme=()=>"https", authority=()=>"Example.com:8443", path=()=>"/x", query=()=>"b=2&a=9&&a=1&c&a", header=()=>undefined, headerAll=(n)=>globalThis.__cookies||[], headers=()=>[], clientIp=()=>"::1", tlsSni=()=>null, httpVersion=()=>"HTTP/2";
export const get=(k)=>globalThis.__cfg?.[k]; export const log=()=>{}; export const pick=()=>null, endpoints=()=>[], status=()=>null, peek=()=>null, purgeKey=()=>0n, purgeTag=()=>0n;`;
const b = await rolldown({ input: join(here, "sluice.js"), logLevel: "silent", plugins: [{ name: "stub", resolveId(id) { if (id.startsWith("sluice:")) return "\0stub"; }, load(id) { if (id === "\0stub") return STUB; } }] });
const out = join(mkdtempSync(join(tmpdir(), "sluice-js-test-")), "sdk.mjs");
await b.write({ file: out, format: "esm" });
const s = await import(pathToFileURL(out).href);
const assert = (await import("node:assert")).strict;
// utf8 decode vs TextDecoder on random byte strings
const td = new TextDecoder("utf-8"), tdf = new TextDecoder("utf-8", { fatal: true });
for (let i = 0; i < 50000; i++) {
  const n = Math.random() * 8 | 0; const b = new Uint8Array(n);
  for (let j = 0; j < n; j++) b[j] = Math.random() < 0.5 ? (Math.random() * 256 | 0) : [0xc2,0xe0,0xed,0xf0,0xf4,0x80,0xbf,0xa0,0x9f,0x8f,0x90,0x41][Math.random()*12|0];
  assert.equal(s.decodeUtf8(b), td.decode(b));
  let f; try { f = tdf.decode(b); } catch { f = undefined; }
  assert.equal(s.decodeUtf8(b, true), f);
}
// encode vs TextEncoder
const te = new TextEncoder();
for (const str of ["", "abc", "é", "✓", "𝄞", "\ud800", "a\udc00b", "\ud83d\ude00x"]) assert.deepEqual(s.encodeUtf8(str), te.encode(str));
// Request helpers (Rust unit tests' values)
const r = new s.Request();
assert.equal(r.sortedQuery(), "a&a=1&a=9&b=2&c");
assert.deepEqual(r.queryParams(), [["a",""],["a","1"],["a","9"],["b","2"],["c",""]]);
assert.equal(r.queryParam("a"), "9"); assert.equal(r.queryParam("c"), ""); assert.equal(r.queryParam("z"), undefined);
assert.equal(r.defaultCacheKey(), "https://example.com:8443/x?a&a=1&a=9&b=2&c");
assert.equal(r.host, "Example.com"); assert.equal(r.tlsSni, undefined);
globalThis.__cookies = [new TextEncoder().encode('a=1; ab=xyz;  c = 3;d="q"'), new Uint8Array([0x78,0x3d,0xff])];
assert.equal(r.cookie("ab"), "xyz"); assert.equal(r.cookie("c"), "3"); assert.equal(r.cookie("d"), '"q"'); assert.equal(r.cookie("AB"), undefined); assert.equal(r.cookie("x"), undefined);
// cmpStr = UTF-8 byte order: query sort with astral vs U+FFxx
globalThis.__cookies = [];
const pairs = ["\uff61=1", "\u{1F600}=2", "\ue000=3", "z=4"];
const sorted = pairs.slice().sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
const r2 = new s.Request(); r2._query = pairs.join("&"); assert.equal(r2.sortedQuery(), sorted.join("&"));
// Decision builders mirror decision.rs tests
const f = s.forward("api").endpoint("10.0.0.1:80").algorithm(s.Algorithm.Maglev).hashKey("k").cacheKey("key").ttl(60).noCache().cacheTag("a").cacheTag("b")
  .setRequestHeader("X-A","1").appendRequestHeader("x-b", new Uint8Array([50])).removeRequestHeader("x-c").setResponseHeader("x-d","4").header("x-e","5").rewrite("/new?q")._raw.val;
assert.equal(f.target.algorithm, "maglev"); assert.deepEqual(f.requestEdits.map(e=>e.name), ["x-a","x-b","x-c"]); assert.equal(f.cache.bypass, true); assert.equal(f.responseEdits[1].op, "append");
const l = s.respond(503, "down").header("Retry-After","1").header("x-a","1").appendResponseHeader("x-a","2").setResponseHeader("retry-after","120").removeResponseHeader("x-gone").ttl(5).algorithm("random").setRequestHeader("x-ignored","1")._raw.val;
assert.deepEqual(l.headers.map(h=>[h.name, new TextDecoder().decode(h.value)]), [["x-a","1"],["x-a","2"],["retry-after","120"]]);
assert.throws(() => s.forward("x").algorithm("fastest"), /unknown algorithm `fastest` \(expected one of round_robin, weighted_round_robin, least_connections, least_request, least_response_time, random, ip_hash, ring_hash, maglev\)/);
assert.equal(s.parseAlgorithm(" Least-Request "), "least_request");
globalThis.__cfg = { b: " ON ", n: "5", bad: "maybe" };
assert.equal(s.config.getBool("b"), true); assert.equal(s.config.getInt("n"), 5); assert.equal(s.config.getBool("zz"), undefined);
assert.throws(() => s.config.getBool("bad"), { message: "setting `bad` = `maybe`: expected a boolean (true/false/on/off/yes/no/1/0)" });
console.log("unit ok");
