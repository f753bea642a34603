// sluice SDK for JavaScript policies (WIT package sluice:policy@0.3.0).
//
// A policy is an ES module that imports this one as "sluice" and exports
// `decide(req)` (and optionally `onResponse(req, resp)`). `build.sh` bundles it with a
// generated entry that calls those functions with a `Request` (and `Response`) and lowers the
// returned builder to the WIT shape.
//
// This file mirrors the Rust SDK (guest-sdk/src): the same request must produce the same
// decision in every language, so string handling follows Rust exactly where it matters
// (cookie parsing, query sorting by UTF-8 bytes, ASCII-only lower-casing, Rust's whitespace).
//
// Engine-neutral on purpose (no TextEncoder/TextDecoder, no Node APIs): it runs on
// StarlingMonkey (componentize-js) and QuickJS (componentize-qjs).

import * as rawRequest from "sluice:policy/request@0.3.0";
import * as rawBalancer from "sluice:policy/balancer@0.3.0";
import * as rawHealth from "sluice:policy/health@0.3.0";
import * as rawCache from "sluice:policy/cache@0.3.0";
import * as rawLog from "sluice:policy/log@0.3.0";
import * as rawConfig from "sluice:policy/config@0.3.0";

/** The SDK version; builds components for `sluice:policy@0.3.0`. */
export const VERSION = "0.3.0";

// ---------------------------------------------------------------------------------------------
// Bytes and text

const EMPTY = new Uint8Array(0);

/** UTF-8 bytes of `s` (lone surrogates become U+FFFD, as in TextEncoder). */
function utf8Encode(s) {
  const n = s.length;
  let i = 0;
  while (i < n && s.charCodeAt(i) < 0x80) i++;
  if (i === n) {
    const out = new Uint8Array(n);
    for (let j = 0; j < n; j++) out[j] = s.charCodeAt(j);
    return out;
  }
  const bytes = [];
  for (let j = 0; j < i; j++) bytes.push(s.charCodeAt(j));
  for (; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      bytes.push(c);
    } else if (c < 0x800) {
      bytes.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    } else if (c >= 0xd800 && c < 0xdc00 && i + 1 < n && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      const cp = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(++i) - 0xdc00);
      bytes.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    } else {
      if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
      bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    }
  }
  return Uint8Array.from(bytes);
}

function unitsToString(units) {
  let s = "";
  for (let i = 0; i < units.length; i += 8192) {
    s += String.fromCharCode.apply(null, units.slice(i, i + 8192));
  }
  return s;
}

/**
 * Decodes UTF-8 (WHATWG decoder, which accepts exactly what Rust's `str::from_utf8` accepts).
 * With `fatal`, returns undefined for invalid input; otherwise replaces each maximal invalid
 * subpart with U+FFFD (like Rust's `from_utf8_lossy`).
 */
function utf8Decode(b, fatal) {
  const n = b.length;
  let i = 0;
  while (i < n && b[i] < 0x80) i++;
  if (i === n) return unitsToString(b);
  const units = Array.prototype.slice.call(b, 0, i);
  let cp = 0;
  let need = 0;
  let lower = 0x80;
  let upper = 0xbf;
  for (; i < n; i++) {
    const x = b[i];
    if (need === 0) {
      if (x < 0x80) {
        units.push(x);
      } else if (x >= 0xc2 && x <= 0xdf) {
        need = 1;
        cp = x & 0x1f;
      } else if (x >= 0xe0 && x <= 0xef) {
        if (x === 0xe0) lower = 0xa0;
        if (x === 0xed) upper = 0x9f;
        need = 2;
        cp = x & 0x0f;
      } else if (x >= 0xf0 && x <= 0xf4) {
        if (x === 0xf0) lower = 0x90;
        if (x === 0xf4) upper = 0x8f;
        need = 3;
        cp = x & 0x07;
      } else {
        if (fatal) return undefined;
        units.push(0xfffd);
      }
      continue;
    }
    if (x < lower || x > upper) {
      if (fatal) return undefined;
      cp = 0;
      need = 0;
      lower = 0x80;
      upper = 0xbf;
      units.push(0xfffd);
      i--; // reprocess this byte as the start of a sequence
      continue;
    }
    lower = 0x80;
    upper = 0xbf;
    cp = (cp << 6) | (x & 0x3f);
    if (--need === 0) {
      if (cp > 0xffff) {
        cp -= 0x10000;
        units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
      } else {
        units.push(cp);
      }
      cp = 0;
    }
  }
  if (need !== 0) {
    if (fatal) return undefined;
    units.push(0xfffd);
  }
  return unitsToString(units);
}

/** The UTF-8 bytes of string `s` (lone surrogates become U+FFFD). */
export function encodeUtf8(s) {
  return utf8Encode(toText(s, "encodeUtf8"));
}

/**
 * `bytes` decoded as UTF-8: invalid sequences become U+FFFD, or with `fatal` the result is
 * undefined (as Rust's `String::from_utf8(..).ok()`).
 */
export function decodeUtf8(bytes, fatal = false) {
  return utf8Decode(toBytes(bytes, "decodeUtf8"), !!fatal);
}

/** `v` as bytes: a Uint8Array as it is, an ArrayBuffer viewed, anything else as UTF-8 text. */
function toBytes(v, what) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v === undefined || v === null) {
    throw new TypeError(`${what}: expected a string or Uint8Array, got ${v}`);
  }
  return utf8Encode(String(v));
}

function toText(v, what) {
  if (v === undefined || v === null) {
    throw new TypeError(`${what}: expected a string, got ${v}`);
  }
  return String(v);
}

/** ASCII-only lower-casing, like Rust's `to_ascii_lowercase`. */
function asciiLower(s) {
  let out = "";
  let changed = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) {
      changed = true;
      out += String.fromCharCode(c + 0x20);
    } else {
      out += s[i];
    }
  }
  return changed ? out : s;
}

/** Rust's `char::is_whitespace` (Unicode White_Space), for the BMP code unit `c`. */
function isRustSpace(c) {
  return (
    (c >= 0x09 && c <= 0x0d) ||
    c === 0x20 ||
    c === 0x85 ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000
  );
}

function trimStartBy(s, pred) {
  let i = 0;
  while (i < s.length && pred(s.charCodeAt(i))) i++;
  return s.slice(i);
}

function trimEndBy(s, pred) {
  let j = s.length;
  while (j > 0 && pred(s.charCodeAt(j - 1))) j--;
  return s.slice(0, j);
}

const rustTrim = (s) => trimEndBy(trimStartBy(s, isRustSpace), isRustSpace);
const isSpaceOrTab = (c) => c === 0x20 || c === 0x09;

/** Compares strings by code point (= UTF-8 byte order, as Rust's `str` ordering). */
function cmpStr(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      // UTF-16 order differs from code point order only between surrogates and U+E000..U+FFFF.
      if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
      return x - y;
    }
  }
  return a.length - b.length;
}

function u32(v, what) {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(`${what}: expected an integer 0..4294967295, got ${v}`);
  }
  return v;
}

function u16(v, what) {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffff) {
    throw new RangeError(`${what}: expected an integer 0..65535, got ${v}`);
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Request helpers (pure; same algorithms as guest-sdk/src/request.rs)

/** `authority` without its port; IPv6 literals keep their brackets. */
function hostOf(authority) {
  if (authority.startsWith("[")) {
    const end = authority.indexOf("]");
    return end < 0 ? authority : authority.slice(0, end + 1);
  }
  const colon = authority.lastIndexOf(":");
  if (colon < 0) return authority;
  const port = authority.slice(colon + 1);
  for (let i = 0; i < port.length; i++) {
    const c = port.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return authority;
  }
  return authority.slice(0, colon);
}

function splitOnce(s, sep) {
  const i = s.indexOf(sep);
  return i < 0 ? undefined : [s.slice(0, i), s.slice(i + sep.length)];
}

/** The non-empty pairs of `query` as [name, value, raw], sorted by name then value (stable). */
function sortedPairs(query) {
  const pairs = [];
  for (const pair of query.split("&")) {
    if (pair === "") continue;
    const nv = splitOnce(pair, "=") || [pair, ""];
    pairs.push([nv[0], nv[1], pair]);
  }
  pairs.sort((a, b) => cmpStr(a[0], b[0]) || cmpStr(a[1], b[1]));
  return pairs;
}

function sortedQueryOf(query) {
  return sortedPairs(query)
    .map((p) => p[2])
    .join("&");
}

function queryParamOf(query, name) {
  for (const pair of query.split("&")) {
    const nv = splitOnce(pair, "=") || [pair, ""];
    if (nv[0] === name && pair !== "") return nv[1];
  }
  return undefined;
}

function cacheKeyOf(scheme, authority, path, query) {
  const host = hostOf(authority);
  const rest = authority.slice(host.length);
  const port = rest.startsWith(":") ? rest.slice(1) : scheme === "https" ? "443" : "80";
  let key = `${scheme}://${asciiLower(host)}:${port}${path}`;
  const sorted = query === undefined ? "" : sortedQueryOf(query);
  if (sorted !== "") key += "?" + sorted;
  return key;
}

/** The value of cookie `name` in one `Cookie` field line (RFC 6265 §5.4), as Rust's cookie_in. */
function cookieIn(line, name) {
  const text = utf8Decode(line, true);
  if (text === undefined) return undefined;
  for (const raw of text.split(";")) {
    const pair = trimEndBy(trimStartBy(raw, isSpaceOrTab), isSpaceOrTab);
    const nv = splitOnce(pair, "=");
    if (nv === undefined) continue;
    if (trimEndBy(nv[0], isRustSpace) === name) return trimStartBy(nv[1], isRustSpace);
  }
  return undefined;
}

function headerObjects(raw) {
  return raw.map((h) => ({ name: h.name, value: utf8Decode(h.value, false), bytes: h.value }));
}

const UNSET = Symbol("unset");

/** A WIT `option` from the host as `undefined` when none (componentize-qjs gives `null`). */
const opt = (v) => (v === null ? undefined : v);

/**
 * The request being decided: the context of the current `decide` or `onResponse` call. Every
 * accessor calls into the host and copies only what it returns; method, scheme, authority,
 * path, query and client IP are fetched once per call.
 */
export class Request {
  constructor() {
    this._method = UNSET;
    this._scheme = UNSET;
    this._authority = UNSET;
    this._path = UNSET;
    this._query = UNSET;
    this._clientIp = UNSET;
  }

  /** The method as received, e.g. `GET` (case-sensitive). */
  get method() {
    if (this._method === UNSET) this._method = rawRequest.method();
    return this._method;
  }

  /** `http` or `https`: whether the client connection was TLS. */
  get scheme() {
    if (this._scheme === UNSET) this._scheme = rawRequest.scheme();
    return this._scheme;
  }

  /** The authority the client addressed, lower case, port included when sent. */
  get authority() {
    if (this._authority === UNSET) this._authority = rawRequest.authority();
    return this._authority;
  }

  /** The host part of `authority`: without the port; IPv6 literals keep their brackets. */
  get host() {
    return hostOf(this.authority);
  }

  /** The path, percent-encoding untouched, starting with `/` (or `*`). Never the query. */
  get path() {
    if (this._path === UNSET) this._path = rawRequest.path();
    return this._path;
  }

  /** The query without the `?`, or undefined when the target had none (may be ""). */
  get query() {
    if (this._query === UNSET) this._query = opt(rawRequest.query());
    return this._query;
  }

  /** The query's [name, value] pairs, raw, sorted by name then value; empty pairs skipped. */
  queryParams() {
    return sortedPairs(this.query === undefined ? "" : this.query).map((p) => [p[0], p[1]]);
  }

  /** The raw value of the first query parameter `name` ("" for `?name` or `?name=`). */
  queryParam(name) {
    const q = this.query;
    return q === undefined ? undefined : queryParamOf(q, toText(name, "queryParam"));
  }

  /** The query with its pairs in `queryParams()` order; undefined when there is no query. */
  sortedQuery() {
    const q = this.query;
    return q === undefined ? undefined : sortedQueryOf(q);
  }

  /** The first value of header `name` (case-insensitive) as text; undefined when absent or not UTF-8. */
  header(name) {
    const v = opt(rawRequest.header(toText(name, "header")));
    return v === undefined ? undefined : utf8Decode(v, true);
  }

  /** The first value of header `name` as bytes; undefined when absent. */
  headerBytes(name) {
    return opt(rawRequest.header(toText(name, "headerBytes")));
  }

  /** Every value of header `name` in order, as text (invalid UTF-8 replaced by U+FFFD). */
  headerAll(name) {
    return rawRequest.headerAll(toText(name, "headerAll")).map((v) => utf8Decode(v, false));
  }

  /** Every value of header `name` in order, as bytes. */
  headerAllBytes(name) {
    return rawRequest.headerAll(toText(name, "headerAllBytes"));
  }

  /** All header fields in order: `{name, value, bytes}` (value as text, U+FFFD for invalid UTF-8). */
  headers() {
    return headerObjects(rawRequest.headers());
  }

  /** The value of cookie `name` (case-sensitive, first match, as sent); undefined when absent. */
  cookie(name) {
    name = toText(name, "cookie");
    for (const line of rawRequest.headerAll("cookie")) {
      const v = cookieIn(line, name);
      if (v !== undefined) return v;
    }
    return undefined;
  }

  /** The client's IP address as text: the connection's peer. */
  get clientIp() {
    if (this._clientIp === UNSET) this._clientIp = rawRequest.clientIp();
    return this._clientIp;
  }

  /** The TLS server name (SNI), if the connection was TLS and sent one. */
  get tlsSni() {
    return opt(rawRequest.tlsSni());
  }

  /** `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`. */
  get httpVersion() {
    return rawRequest.httpVersion();
  }

  /** The host's default cache key: `scheme://host:port/path?sorted-query`. */
  defaultCacheKey() {
    return cacheKeyOf(this.scheme, this.authority, this.path, this.query);
  }

  /** The same string as `defaultCacheKey()`, under the design sketch's name. */
  methodPathSortedQuery() {
    return this.defaultCacheKey();
  }

  toString() {
    return `Request(${this._method === UNSET ? "?" : this._method} ${this._path === UNSET ? "?" : this._path})`;
  }
}

/** The response head being served: the context of the current `onResponse` call. */
export class Response {
  /** @param raw the `sluice:policy/response` interface (passed in by the build's entry). */
  constructor(raw) {
    this._raw = raw;
    this._status = UNSET;
  }

  /** The status code, e.g. 200 or 503. */
  get status() {
    if (this._status === UNSET) this._status = this._raw.status();
    return this._status;
  }

  /** The first value of header `name` as text; undefined when absent or not UTF-8. */
  header(name) {
    const v = opt(this._raw.header(toText(name, "header")));
    return v === undefined ? undefined : utf8Decode(v, true);
  }

  /** The first value of header `name` as bytes. */
  headerBytes(name) {
    return opt(this._raw.header(toText(name, "headerBytes")));
  }

  /** Every value of header `name`, as text (U+FFFD for invalid UTF-8). */
  headerAll(name) {
    return this._raw.headerAll(toText(name, "headerAll")).map((v) => utf8Decode(v, false));
  }

  /** Every value of header `name`, as bytes. */
  headerAllBytes(name) {
    return this._raw.headerAll(toText(name, "headerAllBytes"));
  }

  /** All header fields in order: `{name, value, bytes}`. */
  headers() {
    return headerObjects(this._raw.headers());
  }

  /** `"upstream"` or `"cache"`. */
  get source() {
    return this._raw.source();
  }

  /** The endpoint (`host:port`) that answered, for a response from the upstream. */
  get endpoint() {
    return opt(this._raw.endpoint());
  }
}

// ---------------------------------------------------------------------------------------------
// Algorithms

const ALGORITHM_NAMES = [
  "round_robin",
  "weighted_round_robin",
  "least_connections",
  "least_request",
  "least_response_time",
  "random",
  "ip_hash",
  "ring_hash",
  "maglev",
];

/** The host's load-balancing algorithms, by their config names. */
export const Algorithm = Object.freeze({
  RoundRobin: "round_robin",
  WeightedRoundRobin: "weighted_round_robin",
  LeastConnections: "least_connections",
  LeastRequest: "least_request",
  LeastResponseTime: "least_response_time",
  Random: "random",
  IpHash: "ip_hash",
  RingHash: "ring_hash",
  Maglev: "maglev",
  /** Every algorithm, in the order of the WIT enum. */
  ALL: Object.freeze(ALGORITHM_NAMES.slice()),
  /** Whether it chooses by a key (hash key or client IP) rather than by load. */
  isKeyed(a) {
    const n = parseAlgorithm(a);
    return n === "ip_hash" || n === "ring_hash" || n === "maglev";
  },
});

/**
 * An algorithm name as the config writes it (`ring_hash`), accepting `-` for `_` and any case
 * (like Rust's `Algorithm::from_str`). Throws a TypeError for an unknown name.
 */
export function parseAlgorithm(s) {
  const name = asciiLower(rustTrim(String(s))).split("-").join("_");
  if (ALGORITHM_NAMES.indexOf(name) < 0) {
    throw new TypeError(`unknown algorithm \`${s}\` (expected one of ${ALGORITHM_NAMES.join(", ")})`);
  }
  return name;
}

/** WIT spelling (`ring-hash`) of an algorithm, or undefined for none. */
function algorithmToRaw(a) {
  if (a === undefined || a === null) return undefined;
  return parseAlgorithm(a).split("_").join("-");
}

// ---------------------------------------------------------------------------------------------
// Decisions

function edit(op, name, value) {
  return { op, name: asciiLower(name), value };
}

/**
 * The answer to one request: forward it upstream or respond locally. Builder methods change
 * the decision in place and return it, so they chain. Methods that only make sense for a
 * forwarded request have no effect on a local response; the response-header methods edit a
 * local response's header list directly. Header names are sent lower-cased.
 */
export class Decision {
  /** @internal Use `forward`, `forwardDefault` or `respond`. */
  constructor(raw) {
    this._raw = raw;
  }

  /** Whether this decision forwards the request upstream. */
  get isForward() {
    return this._raw.tag === "forward";
  }

  /** Whether this decision is a local response. */
  get isLocal() {
    return this._raw.tag === "respond";
  }

  _fwd() {
    return this._raw.tag === "forward" ? this._raw.val : undefined;
  }

  /** Sends the request to this endpoint (`host:port`) of the pool. */
  endpoint(addr) {
    const f = this._fwd();
    if (f) f.target.endpoint = toText(addr, "endpoint");
    return this;
  }

  /** Picks the endpoint with `algorithm` (an `Algorithm` value or name) for this request. */
  algorithm(algorithm) {
    const raw = algorithmToRaw(algorithm);
    const f = this._fwd();
    if (f) f.target.algorithm = raw;
    return this;
  }

  /** Keeps requests with the same key (string or bytes) on the same endpoint. */
  hashKey(key) {
    const bytes = toBytes(key, "hashKey");
    const f = this._fwd();
    if (f) f.target.hashKey = bytes;
    return this;
  }

  /** The cache key for the response (default: `req.defaultCacheKey()`). */
  cacheKey(key) {
    const bytes = toBytes(key, "cacheKey");
    const f = this._fwd();
    if (f) f.cache.key = bytes;
    return this;
  }

  /** Caches the response for `secs` seconds, whatever the origin's headers say. */
  ttl(secs) {
    u32(secs, "ttl");
    const f = this._fwd();
    if (f) f.cache.ttlSecs = secs;
    return this;
  }

  /** Neither looks the request up in the cache nor stores its response. */
  noCache() {
    const f = this._fwd();
    if (f) f.cache.bypass = true;
    return this;
  }

  /** Labels the cached response with `tag`, for purging. Repeatable. */
  cacheTag(tag) {
    tag = toText(tag, "cacheTag");
    const f = this._fwd();
    if (f) f.cache.tags.push(tag);
    return this;
  }

  /** Sets request header `name` upstream, replacing every value it had. */
  setRequestHeader(name, value) {
    return this._requestEdit("set", name, value);
  }

  /** Adds `value` as one more line of request header `name` upstream. */
  appendRequestHeader(name, value) {
    return this._requestEdit("append", name, value);
  }

  /** Removes every value of request header `name` before forwarding. */
  removeRequestHeader(name) {
    return this._requestEdit("remove", name, EMPTY);
  }

  /** Sets response header `name`, replacing every value (a local response: in its list). */
  setResponseHeader(name, value) {
    return this._responseEdit("set", name, value);
  }

  /** Adds a line of response header `name` (a local response: same as `header`). */
  appendResponseHeader(name, value) {
    return this._responseEdit("append", name, value);
  }

  /** Removes response header `name` (a local response: from its list). */
  removeResponseHeader(name) {
    return this._responseEdit("remove", name, EMPTY);
  }

  /** Adds a header to the response the client gets (on a forward: `appendResponseHeader`). */
  header(name, value) {
    return this._responseEdit("append", name, value);
  }

  /** Replaces the request target (path and query) sent upstream; must start with `/`. */
  rewrite(pathAndQuery) {
    pathAndQuery = toText(pathAndQuery, "rewrite");
    const f = this._fwd();
    if (f) f.rewrite = pathAndQuery;
    return this;
  }

  _requestEdit(op, name, value) {
    name = toText(name, "header name");
    value = toBytes(value, "header value");
    const f = this._fwd();
    if (f) f.requestEdits.push(edit(op, name, value));
    return this;
  }

  _responseEdit(op, name, value) {
    name = toText(name, "header name");
    value = toBytes(value, "header value");
    if (this._raw.tag === "forward") {
      this._raw.val.responseEdits.push(edit(op, name, value));
    } else {
      const local = this._raw.val;
      const lower = asciiLower(name);
      if (op === "set" || op === "remove") local.headers = local.headers.filter((h) => h.name !== lower);
      if (op !== "remove") local.headers.push({ name: lower, value });
    }
    return this;
  }
}

function forwardTo(pool) {
  return new Decision({
    tag: "forward",
    val: {
      target: { pool, endpoint: undefined, hashKey: undefined, algorithm: undefined },
      cache: { key: undefined, bypass: false, ttlSecs: undefined, tags: [] },
      requestEdits: [],
      responseEdits: [],
      rewrite: undefined,
    },
  });
}

/** Forwards the request to the pool named `pool` in the host's config. */
export function forward(pool) {
  return forwardTo(toText(pool, "forward"));
}

/** Forwards the request to the host's default pool (`proxy.default_pool`). */
export function forwardDefault() {
  return forwardTo(undefined);
}

/**
 * Answers the client directly with `status` (200..=599) and `body` (string or bytes). In
 * `onResponse`, replaces the upstream's response. Add headers with `.header(name, value)`.
 */
export function respond(status, body) {
  u16(status, "respond status");
  return new Decision({
    tag: "respond",
    val: { status, headers: [], body: body === undefined ? EMPTY : toBytes(body, "respond body") },
  });
}

/** What `onResponse` does with a response it serves: header edits and storage changes. */
export class ResponseDecision {
  /** @internal Use `serve()`. */
  constructor() {
    this._raw = { edits: [], ttlSecs: undefined, tags: [], noStore: false };
  }

  _edit(op, name, value) {
    this._raw.edits.push(edit(op, toText(name, "header name"), toBytes(value, "header value")));
    return this;
  }

  /** Replaces every value of response header `name`. */
  setHeader(name, value) {
    return this._edit("set", name, value);
  }

  /** Adds a value of response header `name`. */
  appendHeader(name, value) {
    return this._edit("append", name, value);
  }

  /** Removes response header `name`. */
  removeHeader(name) {
    return this._edit("remove", name, EMPTY);
  }

  /** Stores the response for `secs` seconds (upstream responses only; within RFC 9111). */
  ttl(secs) {
    this._raw.ttlSecs = u32(secs, "ttl");
    return this;
  }

  /** Adds a purge tag to the stored response (upstream responses only). */
  cacheTag(tag) {
    this._raw.tags.push(toText(tag, "cacheTag"));
    return this;
  }

  /** Same as `cacheTag`. */
  tag(tag) {
    return this.cacheTag(tag);
  }

  /** Serves the response without storing it (upstream responses only). */
  noStore() {
    this._raw.noStore = true;
    return this;
  }
}

/** Serves the response (unchanged unless you chain edits) from `onResponse`. */
export function serve() {
  return new ResponseDecision();
}

// ---------------------------------------------------------------------------------------------
// Host services

/** A setting whose value could not be read as the type asked for. */
export class SettingError extends Error {
  constructor(key, value, expected) {
    super(`setting \`${key}\` = \`${value}\`: expected ${expected}`);
    this.name = "SettingError";
    this.key = key;
    this.value = value;
    this.expected = expected;
  }
}

/** The policy's settings: the `[policy.settings]` table of the host's config, as text. */
export const config = Object.freeze({
  /** The value of setting `key` as text, or undefined when it is not set. */
  get(key) {
    return opt(rawConfig.get(toText(key, "config.get")));
  },
  /** The value of setting `key`, or `fallback` when it is not set. */
  getOr(key, fallback) {
    const v = opt(rawConfig.get(toText(key, "config.getOr")));
    return v === undefined ? fallback : v;
  },
  /** Setting `key` as a boolean (true/on/yes/1, false/off/no/0, any case); throws SettingError. */
  getBool(key) {
    const v = opt(rawConfig.get(toText(key, "config.getBool")));
    if (v === undefined) return undefined;
    const t = asciiLower(rustTrim(v));
    if (t === "true" || t === "on" || t === "yes" || t === "1") return true;
    if (t === "false" || t === "off" || t === "no" || t === "0") return false;
    throw new SettingError(key, v, "a boolean (true/false/on/off/yes/no/1/0)");
  },
  /** Setting `key` as an integer (safe integer range); throws SettingError. */
  getInt(key) {
    const v = opt(rawConfig.get(toText(key, "config.getInt")));
    if (v === undefined) return undefined;
    const t = rustTrim(v);
    const n = /^[+-]?[0-9]+$/.test(t) ? Number(t) : NaN;
    if (!Number.isSafeInteger(n)) throw new SettingError(key, v, "an integer");
    return n;
  },
  /** Setting `key` as a finite number; throws SettingError. */
  getNumber(key) {
    const v = opt(rawConfig.get(toText(key, "config.getNumber")));
    if (v === undefined) return undefined;
    const t = rustTrim(v);
    const n = /^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/.test(t) ? Number(t) : NaN;
    if (!Number.isFinite(n)) throw new SettingError(key, v, "a number");
    return n;
  },
});

const LEVELS = ["trace", "debug", "info", "warn", "error"];

function logAt(level, message) {
  rawLog.log(level, typeof message === "string" ? message : String(message));
}

/** Lines for the host's log (target `sluice::guest`), tagged with the policy and revision. */
export const log = Object.freeze({
  /** Writes `message` at `level` (`"trace"`, `"debug"`, `"info"`, `"warn"`, `"error"`). */
  log(level, message) {
    if (LEVELS.indexOf(level) < 0) throw new TypeError(`unknown log level \`${level}\` (expected one of ${LEVELS.join(", ")})`);
    logAt(level, message);
  },
  trace: (m) => logAt("trace", m),
  debug: (m) => logAt("debug", m),
  info: (m) => logAt("info", m),
  warn: (m) => logAt("warn", m),
  error: (m) => logAt("error", m),
});

/** The host's pools and load balancing, as the host sees them at the moment of the call. */
export const balancer = Object.freeze({
  /**
   * Picks an endpoint of `pool` as the host would for a forward with the same algorithm and
   * hash key; undefined when the pool is unknown or no endpoint is eligible.
   */
  pick(pool, algorithm, hashKey) {
    return opt(rawBalancer.pick(
      toText(pool, "balancer.pick"),
      algorithmToRaw(algorithm),
      hashKey === undefined || hashKey === null ? undefined : toBytes(hashKey, "balancer.pick hash key"),
    ));
  },
  /** `pick` by a hash key with the pool's algorithm. */
  pickWithKey(pool, key) {
    return opt(rawBalancer.pick(toText(pool, "balancer.pickWithKey"), undefined, toBytes(key, "balancer.pickWithKey key")));
  },
  /** Every endpoint of `pool` in config order with its live state; empty when unknown. */
  endpoints(pool) {
    return rawBalancer.endpoints(toText(pool, "balancer.endpoints")).map((e) => ({
      addr: e.addr,
      weight: e.weight,
      healthy: e.healthy,
      inFlight: e.inFlight,
      ewmaLatencyUs: e.ewmaLatencyUs,
    }));
  },
});

/** The health of the host's endpoints. */
export const health = Object.freeze({
  /** `"healthy"`, `"unhealthy"` or `"ejected"`; undefined when no such pool or endpoint. */
  status(pool, addr) {
    return opt(rawHealth.status(toText(pool, "health.status"), toText(addr, "health.status")));
  },
});

/** The host's HTTP cache. Without a `[cache]` table, peek returns undefined and purges 0. */
export const cache = Object.freeze({
  /** The newest response stored under `key`, or undefined. */
  peek(key) {
    const e = opt(rawCache.peek(toBytes(key, "cache.peek")));
    if (e === undefined) return undefined;
    const ttlSecs = Number(e.ttlSecs);
    return {
      ageSecs: Number(e.ageSecs),
      ttlSecs,
      status: e.status,
      size: Number(e.size),
      tags: e.tags,
      isFresh: ttlSecs > 0,
    };
  },
  /** Purges what is stored under `key` (soft: marks stale). Returns how many. */
  purgeKey(key, soft = false) {
    return Number(rawCache.purgeKey(toBytes(key, "cache.purgeKey"), !!soft));
  },
  /** Purges everything tagged `tag` (soft: marks stale). Returns how many. */
  purgeTag(tag, soft = false) {
    return Number(rawCache.purgeTag(toText(tag, "cache.purgeTag"), !!soft));
  },
});

// ---------------------------------------------------------------------------------------------
// Glue for the entry module that build.sh generates (not part of the public API).

function describe(v) {
  if (v === null) return "null";
  if (typeof v === "object") {
    const name = v.constructor && v.constructor.name;
    return !name || name === "Object" ? "a plain object" : `a ${name}`;
  }
  return `${typeof v} ${String(v)}`;
}

export const __glue = Object.freeze({
  /** Calls the policy's decide(req) and lowers the result to `sluice:policy/types.decision`. */
  decide(fn) {
    const d = fn(new Request());
    if (!(d instanceof Decision)) {
      throw new TypeError(
        `decide(req) must return a Decision (forward(...), forwardDefault() or respond(...)), got ${describe(d)}`,
      );
    }
    return d._raw;
  },
  /** Calls the policy's onResponse(req, resp) and lowers it to `response-decision`. */
  onResponse(fn, rawResponse) {
    const d = fn(new Request(), new Response(rawResponse));
    if (d === undefined) return { tag: "serve", val: { edits: [], ttlSecs: undefined, tags: [], noStore: false } };
    if (d instanceof ResponseDecision) return { tag: "serve", val: d._raw };
    if (d instanceof Decision && d.isLocal) return d._raw;
    throw new TypeError(
      `onResponse(req, resp) must return serve(...), respond(...) or nothing, got ${
        d instanceof Decision ? "a forward Decision" : describe(d)
      }`,
    );
  },
});
