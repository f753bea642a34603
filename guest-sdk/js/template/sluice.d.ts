// Types for the sluice JavaScript SDK (`import ... from "sluice"`), WIT sluice:policy@0.3.0.
// For `// @ts-check` in policy.js or a policy.ts: map "sluice" to this file, e.g. in
// jsconfig.json / tsconfig.json: { "compilerOptions": { "paths": { "sluice": ["./sluice.d.ts"] } } }

/** The SDK version; builds components for `sluice:policy@0.3.0`. */
export const VERSION: string;

/** A value sent as bytes: text (encoded as UTF-8) or raw bytes. */
export type Bytes = string | Uint8Array;

/** One header field: the name (lower case), the value as text (U+FFFD for invalid UTF-8) and as bytes. */
export interface Header {
  name: string;
  value: string;
  bytes: Uint8Array;
}

/**
 * The request being decided: the context of the current `decide` or `onResponse` call.
 * Accessors call into the host; method, scheme, authority, path, query and client IP are
 * fetched once per call. Do not keep it beyond the call.
 */
export class Request {
  private constructor();
  /** The method as received, e.g. `GET` (case-sensitive). */
  readonly method: string;
  /** `http` or `https`: whether the client connection was TLS. */
  readonly scheme: string;
  /** The authority the client addressed (`Host` / `:authority`), lower case, port included when sent. */
  readonly authority: string;
  /** The host part of `authority`, without the port (IPv6 literals keep their brackets). */
  readonly host: string;
  /** The path, percent-encoding untouched, starting with `/` (or `*`). Never includes the query. */
  readonly path: string;
  /** The query without the `?`, or undefined when the target had none (possibly ""). */
  readonly query: string | undefined;
  /** The client's IP address as text (`192.0.2.7`, `2001:db8::1`): the connection's peer. */
  readonly clientIp: string;
  /** The TLS server name (SNI), if the connection was TLS and sent one. */
  readonly tlsSni: string | undefined;
  /** `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`. */
  readonly httpVersion: string;
  /** The query's `[name, value]` pairs, raw (no decoding), sorted by name then value; empty pairs skipped. */
  queryParams(): Array<[string, string]>;
  /** The raw value of the first query parameter `name` (`""` for `?name` or `?name=`). */
  queryParam(name: string): string | undefined;
  /** The query re-joined in `queryParams()` order; undefined when there is no query. */
  sortedQuery(): string | undefined;
  /** The first value of header `name` (case-insensitive) as text; undefined when absent or not UTF-8. */
  header(name: string): string | undefined;
  /** The first value of header `name` as bytes; undefined when absent. */
  headerBytes(name: string): Uint8Array | undefined;
  /** Every value of header `name` in order (field lines are not merged), as text (U+FFFD for invalid UTF-8). */
  headerAll(name: string): string[];
  /** Every value of header `name` in order, as bytes. */
  headerAllBytes(name: string): Uint8Array[];
  /** All header fields in order. Prefer `header` when you know the name: this copies all of them. */
  headers(): Header[];
  /** Cookie `name` from the `Cookie` header(s) (RFC 6265: case-sensitive, first match, value as sent). */
  cookie(name: string): string | undefined;
  /** The host's default cache key, `scheme://host:port/path?sorted-query`. */
  defaultCacheKey(): string;
  /** The same as `defaultCacheKey()`. */
  methodPathSortedQuery(): string;
}

/** Where a response comes from. */
export type ResponseSource = "upstream" | "cache";

/** The response head being served: the context of the current `onResponse` call. */
export class Response {
  private constructor();
  /** The status code, e.g. 200 or 503. */
  readonly status: number;
  /** `"upstream"` (its head just arrived) or `"cache"` (a stored response). */
  readonly source: ResponseSource;
  /** The endpoint (`host:port`) that answered, for a response from the upstream. */
  readonly endpoint: string | undefined;
  /** The first value of header `name` as text; undefined when absent or not UTF-8. */
  header(name: string): string | undefined;
  /** The first value of header `name` as bytes. */
  headerBytes(name: string): Uint8Array | undefined;
  /** Every value of header `name` in order, as text. */
  headerAll(name: string): string[];
  /** Every value of header `name` in order, as bytes. */
  headerAllBytes(name: string): Uint8Array[];
  /** All header fields in order (hop-by-hop fields already removed). */
  headers(): Header[];
}

/** A load-balancing algorithm by its config name. */
export type AlgorithmName =
  | "round_robin"
  | "weighted_round_robin"
  | "least_connections"
  | "least_request"
  | "least_response_time"
  | "random"
  | "ip_hash"
  | "ring_hash"
  | "maglev";

/** The host's load-balancing algorithms. Methods also accept `ring-hash` and any case. */
export const Algorithm: {
  readonly RoundRobin: "round_robin";
  readonly WeightedRoundRobin: "weighted_round_robin";
  readonly LeastConnections: "least_connections";
  readonly LeastRequest: "least_request";
  readonly LeastResponseTime: "least_response_time";
  readonly Random: "random";
  readonly IpHash: "ip_hash";
  readonly RingHash: "ring_hash";
  readonly Maglev: "maglev";
  /** Every algorithm, in the order of the WIT enum. */
  readonly ALL: readonly AlgorithmName[];
  /** Whether it chooses by a key (hash key, or client IP for ip_hash) rather than by load. */
  isKeyed(algorithm: AlgorithmName | string): boolean;
};

/** Parses an algorithm name (`ring_hash`, `Ring-Hash`, ...); throws a TypeError for an unknown one. */
export function parseAlgorithm(name: string): AlgorithmName;

/**
 * The answer to one request: forward it upstream or respond locally. Builder methods change
 * the decision in place and return it. Forward-only methods (endpoint, algorithm, hashKey,
 * cache and request-header methods, rewrite) have no effect on a local response; the
 * response-header methods edit a local response's headers directly.
 */
export class Decision {
  private constructor();
  /** Whether it forwards the request upstream. */
  readonly isForward: boolean;
  /** Whether it is a local response. */
  readonly isLocal: boolean;
  /** Sends the request to this endpoint (`host:port` as in the config) of the pool. */
  endpoint(addr: string): this;
  /** Picks the endpoint with this algorithm instead of the pool's, for this request. */
  algorithm(algorithm: AlgorithmName | string): this;
  /** Keeps requests with the same key on the same endpoint (weighted consistent hashing). */
  hashKey(key: Bytes): this;
  /** The cache key for the response (default: `req.defaultCacheKey()`). */
  cacheKey(key: Bytes): this;
  /** Caches the response for `secs` seconds (an integer 0..2^32-1), whatever the origin says. */
  ttl(secs: number): this;
  /** Neither looks the request up in the cache nor stores its response. */
  noCache(): this;
  /** Labels the cached response with `tag`, for purging. Repeatable. */
  cacheTag(tag: string): this;
  /** Sets request header `name` upstream, replacing every value. */
  setRequestHeader(name: string, value: Bytes): this;
  /** Adds a line of request header `name` upstream. */
  appendRequestHeader(name: string, value: Bytes): this;
  /** Removes request header `name` before forwarding. */
  removeRequestHeader(name: string): this;
  /** Sets response header `name`, replacing every value. */
  setResponseHeader(name: string, value: Bytes): this;
  /** Adds a line of response header `name`. */
  appendResponseHeader(name: string, value: Bytes): this;
  /** Removes response header `name`. */
  removeResponseHeader(name: string): this;
  /** Adds a header to the response the client gets (local response: one more entry). */
  header(name: string, value: Bytes): this;
  /** Replaces the request target (path and query) sent upstream; must start with `/`. */
  rewrite(pathAndQuery: string): this;
}

/** Forwards the request to the pool named `pool` in the host's config. */
export function forward(pool: string): Decision;
/** Forwards the request to the host's default pool (`proxy.default_pool`). */
export function forwardDefault(): Decision;
/**
 * Answers directly with `status` (200..599) and `body`; from `onResponse`, replaces the
 * upstream's response. The host adds `content-length`; add others with `.header()`.
 */
export function respond(status: number, body?: Bytes): Decision;

/** What `onResponse` does with a response it serves. */
export class ResponseDecision {
  private constructor();
  /** Replaces every value of response header `name`. */
  setHeader(name: string, value: Bytes): this;
  /** Adds a value of response header `name`. */
  appendHeader(name: string, value: Bytes): this;
  /** Removes response header `name`. */
  removeHeader(name: string): this;
  /** Stores the response for `secs` seconds (upstream responses only; within RFC 9111). */
  ttl(secs: number): this;
  /** Adds a purge tag to the stored response (upstream responses only). */
  cacheTag(tag: string): this;
  /** The same as `cacheTag`. */
  tag(tag: string): this;
  /** Serves the response without storing it (upstream responses only). */
  noStore(): this;
}

/** Serves the response from `onResponse` (unchanged unless edits are chained). */
export function serve(): ResponseDecision;

/** The signature of a policy's `decide` export. */
export type DecideFn = (req: Request) => Decision;
/** The signature of a policy's optional `onResponse` export; returning nothing serves unchanged. */
export type OnResponseFn = (req: Request, resp: Response) => ResponseDecision | Decision | void;

/** A setting whose value could not be read as the type asked for. */
export class SettingError extends Error {
  readonly key: string;
  readonly value: string;
  readonly expected: string;
}

/** The policy's settings (`[policy.settings]`), fixed for the life of a revision. */
export const config: {
  /** The value of `key` as text (numbers and booleans as TOML writes them), or undefined. */
  get(key: string): string | undefined;
  /** The value of `key`, or `fallback` when it is not set. */
  getOr<T = string>(key: string, fallback: T): string | T;
  /** `key` as a boolean (true/on/yes/1, false/off/no/0, any case); throws SettingError otherwise. */
  getBool(key: string): boolean | undefined;
  /** `key` as a (safe) integer; throws SettingError otherwise. */
  getInt(key: string): number | undefined;
  /** `key` as a finite number; throws SettingError otherwise. */
  getNumber(key: string): number | undefined;
};

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";

/** Lines for the host's log (target `sluice::guest`); `console.log` also goes there (stdout). */
export const log: {
  log(level: LogLevel, message: unknown): void;
  trace(message: unknown): void;
  debug(message: unknown): void;
  info(message: unknown): void;
  warn(message: unknown): void;
  error(message: unknown): void;
};

/** One endpoint of a pool with its live state. */
export interface Endpoint {
  /** `host:port` as written in the config. */
  addr: string;
  weight: number;
  /** Neither failing active health checks nor ejected by outlier detection. */
  healthy: boolean;
  /** Requests sent to it that have not finished. */
  inFlight: number;
  /** Peak-EWMA of its response-head latency, in microseconds (0 before the first response). */
  ewmaLatencyUs: number;
}

/** The host's pools and load balancing. */
export const balancer: {
  /** The endpoint the host would pick for a forward with this algorithm and hash key; undefined when none is eligible. */
  pick(pool: string, algorithm?: AlgorithmName | string | null, hashKey?: Bytes | null): string | undefined;
  /** `pick` by a hash key with the pool's algorithm. */
  pickWithKey(pool: string, key: Bytes): string | undefined;
  /** Every endpoint of `pool` in config order; empty when the pool is unknown. */
  endpoints(pool: string): Endpoint[];
};

export type HealthState = "healthy" | "unhealthy" | "ejected";

/** The health of the host's endpoints. */
export const health: {
  /** Endpoint `addr` of `pool`; undefined when there is no such pool or endpoint. */
  status(pool: string, addr: string): HealthState | undefined;
};

/** A stored response, as `cache.peek` sees it. */
export interface CacheEntry {
  ageSecs: number;
  /** Seconds of freshness left; negative once stale. */
  ttlSecs: number;
  status: number;
  /** Body size in bytes. */
  size: number;
  tags: string[];
  isFresh: boolean;
}

/** The host's HTTP cache; without a `[cache]` table peek returns undefined and purges 0. */
export const cache: {
  peek(key: Bytes): CacheEntry | undefined;
  purgeKey(key: Bytes, soft?: boolean): number;
  purgeTag(tag: string, soft?: boolean): number;
};

/** The UTF-8 bytes of `s`. */
export function encodeUtf8(s: string): Uint8Array;
/** UTF-8 text of `bytes`: invalid sequences become U+FFFD, or with `fatal` the result is undefined. */
export function decodeUtf8(bytes: Uint8Array, fatal?: false): string;
export function decodeUtf8(bytes: Uint8Array, fatal: true): string | undefined;
