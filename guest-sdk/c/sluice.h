/*
 * sluice.h: write sluice routing policies in C (sluice:policy@0.3.0).
 *
 * A policy is one C file, policy.c, that includes this header and defines
 *
 *     sluice_decision *sluice_decide(void);
 *
 * and, optionally, the response phase:
 *
 *     sluice_response_decision *sluice_on_response(void);
 *
 * `sluice policy build DIR` compiles it into a component: world `responder` when policy.c
 * defines sluice_on_response (an external symbol of that name, found in the compiled object),
 * world `policy` otherwise (then the host never calls a response phase and pays nothing).
 *
 * The request (and in sluice_on_response the response) is the context of the call: read it
 * with the sluice_request_* / sluice_response_* functions, there is nothing to pass around.
 *
 * MEMORY. Everything the SDK hands out (strings, arrays, decisions, sluice_format results,
 * sluice_alloc blocks) lives in a per-call arena and is freed all at once when the call ends
 * (after the host has read the decision). Never free it yourself, and never keep a pointer
 * to it across calls (in a static, say). Everything you pass in is copied when it needs to
 * outlive your call into the SDK, so stack buffers are fine. Strings are NUL-terminated
 * UTF-8 (header values: bytes as received; RFC 9110 forbids NUL in them, so NUL-terminated
 * is lossless). A function that returns `const char *` returns NULL for "absent" and ""
 * for "present but empty".
 *
 * ERRORS. sluice_fail() logs at error level and traps, like a Rust panic: the host applies
 * its `fail` setting (forward to the default pool, or 503). abort() and a failed assert()
 * trap too, without the log line.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The WIT package this SDK builds for. */
#define SLUICE_WIT_VERSION "0.3.0"

#if defined(__GNUC__) || defined(__clang__)
#define SLUICE_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define SLUICE_NORETURN __attribute__((noreturn))
#else
#define SLUICE_PRINTF(f, a)
#define SLUICE_NORETURN
#endif

/* ------------------------------------------------------------------ types */

/* A byte string: `ptr` is NUL-terminated (never NULL inside arrays the SDK returns). */
typedef struct sluice_str {
    const char *ptr;
    size_t len;
} sluice_str;

/* One header field (WIT `field`): name lower case, value as received. */
typedef struct sluice_field {
    sluice_str name;
    sluice_str value;
} sluice_field;

/* One query pair, raw (no percent-decoding, `+` untouched); `a` alone has value "". */
typedef struct sluice_param {
    const char *name;
    const char *value;
} sluice_param;

/* The host's load-balancing algorithms (WIT `algorithm`, in its order). */
typedef enum sluice_alg {
    SLUICE_ALG_POOL = -1, /* none: the pool's configured algorithm (for sluice_balancer_pick) */
    SLUICE_ALG_ROUND_ROBIN = 0,
    SLUICE_ALG_WEIGHTED_ROUND_ROBIN,
    SLUICE_ALG_LEAST_CONNECTIONS,
    SLUICE_ALG_LEAST_REQUEST,
    SLUICE_ALG_LEAST_RESPONSE_TIME,
    SLUICE_ALG_RANDOM,
    SLUICE_ALG_IP_HASH,
    SLUICE_ALG_RING_HASH,
    SLUICE_ALG_MAGLEV,
} sluice_alg;

/* The config name (`ring_hash`), or NULL for SLUICE_ALG_POOL / out of range. */
const char *sluice_algorithm_name(sluice_alg alg);
/* Parses a config name (case-insensitive, `-` or `_`, surrounding whitespace ignored);
 * SLUICE_ALG_POOL when `name` is NULL or unknown. */
sluice_alg sluice_algorithm_parse(const char *name);
/* Whether the algorithm takes a key (ip_hash, ring_hash, maglev). */
bool sluice_algorithm_is_keyed(sluice_alg alg);

/* One endpoint of a pool, as sluice_balancer_endpoints returns it. */
typedef struct sluice_pool_endpoint {
    sluice_str addr;          /* `host:port` as written in the config */
    uint32_t weight;
    bool healthy;             /* neither failing active checks nor ejected */
    uint32_t in_flight;       /* requests sent and not finished */
    uint32_t ewma_latency_us; /* peak-EWMA response-head latency; 0 before the first */
} sluice_pool_endpoint;

typedef enum sluice_health {
    SLUICE_HEALTH_UNKNOWN = -1, /* no such pool or endpoint */
    SLUICE_HEALTHY = 0,
    SLUICE_UNHEALTHY,           /* failing active health checks */
    SLUICE_EJECTED,             /* ejected by outlier detection */
} sluice_health;

/* A stored response, as sluice_cache_peek returns it. */
typedef struct sluice_cache_entry {
    uint64_t age_secs;
    int64_t ttl_secs;         /* freshness left; negative once stale */
    uint16_t status;
    uint64_t size;            /* body bytes */
    const sluice_str *tags;
    size_t tags_len;
} sluice_cache_entry;

typedef enum sluice_log_level {
    SLUICE_LOG_TRACE = 0,
    SLUICE_LOG_DEBUG,
    SLUICE_LOG_INFO,
    SLUICE_LOG_WARN,
    SLUICE_LOG_ERROR,
} sluice_log_level;

typedef enum sluice_source {
    SLUICE_FROM_UPSTREAM = 0, /* the upstream's response head has just arrived */
    SLUICE_FROM_CACHE,        /* served from the host's cache */
} sluice_source;

/* Opaque: what sluice_decide returns (forward upstream, or answer locally). */
typedef struct sluice_decision sluice_decision;
/* Opaque: what sluice_on_response returns (serve with changes, or answer instead). */
typedef struct sluice_response_decision sluice_response_decision;

/* ------------------------------------------------------------------ your functions */

/* Called once per request. Returning NULL is the same as sluice_forward_default(). */
sluice_decision *sluice_decide(void);
/* Optional: called with every response head to a forwarded request (from the upstream or
 * the cache) before it is served. Returning NULL is the same as sluice_serve(). */
sluice_response_decision *sluice_on_response(void);

/* ------------------------------------------------------------------ the request */

const char *sluice_request_method(void);    /* `GET`; case-sensitive */
const char *sluice_request_scheme(void);    /* `http` or `https` */
const char *sluice_request_authority(void); /* lower case, port if sent; "" for HTTP/1.0 without Host */
const char *sluice_request_host(void);      /* authority without the port; IPv6 keeps [] */
const char *sluice_request_path(void);      /* starts with `/` (or `*`); no query */
const char *sluice_request_query(void);     /* without `?`; NULL when the target had none */
const char *sluice_request_client_ip(void); /* the connection's peer, `192.0.2.7` */
const char *sluice_request_tls_sni(void);   /* NULL without TLS or SNI */
const char *sluice_request_http_version(void); /* `HTTP/1.0`, `HTTP/1.1`, `HTTP/2` */

/* The first value of header `name` (case-insensitive); NULL when absent. */
const char *sluice_request_header(const char *name);
/* Every value of header `name` in order; returns the count, *values the array. */
size_t sluice_request_header_all(const char *name, const sluice_str **values);
/* Every header field in order (copies all of them: prefer sluice_request_header). */
size_t sluice_request_headers(const sluice_field **headers);
/* Cookie `name` from the Cookie header(s) (RFC 6265 5.4, names case-sensitive, first match
 * wins, value as sent, quotes included); NULL when absent or the line is not UTF-8. */
const char *sluice_request_cookie(const char *name);

/* The raw value of the first query parameter `name` in received order ("" for `?name`);
 * NULL when absent. */
const char *sluice_request_query_param(const char *name);
/* The query's pairs sorted by name then value (stable); empty pairs skipped. */
size_t sluice_request_query_params(const sluice_param **params);
/* The query re-joined in sorted order, each pair byte for byte; NULL without a query. */
const char *sluice_request_sorted_query(void);
/* The host's default cache key: `scheme://host:port/path?sorted-query` (the `?` part only
 * when the sorted query is non-empty; host lower case; port 80/443 when none was sent). */
const char *sluice_request_default_cache_key(void);

/* ------------------------------------------------------------------ decisions */

/* Forward to the pool named `pool` in the host's config (copied); NULL is the default pool,
 * so `sluice_forward(sluice_config_get("pool"))` falls back to it when the setting is unset. */
sluice_decision *sluice_forward(const char *pool);
/* Forward to the host's default pool (`proxy.default_pool`). */
sluice_decision *sluice_forward_default(void);
/* Answer locally with `status` (200..599) and `len` bytes of `body` (copied; may be NULL
 * when len is 0). The host adds content-length; add others with sluice_header. */
sluice_decision *sluice_respond(uint16_t status, const void *body, size_t len);
/* sluice_respond with a NUL-terminated body. */
sluice_decision *sluice_respond_str(uint16_t status, const char *body);
bool sluice_is_forward(const sluice_decision *d);

/*
 * Builders: each changes `d` and returns it, so calls nest:
 *     return sluice_ttl(sluice_forward("static"), 86400);
 * Forward-only ones (endpoint, algorithm, hash_key, cache_key, ttl, no_cache, cache_tag,
 * *_request_header, rewrite) do nothing on a local response. The response-header ones work
 * on both: on a local response they edit its header list. Header names are sent lower case.
 * Strings are copied. The host validates the result (unknown pool, bad header, framing
 * header, rewrite not starting with `/` ... is a policy failure); the builders do not.
 */
sluice_decision *sluice_endpoint(sluice_decision *d, const char *addr);
sluice_decision *sluice_algorithm(sluice_decision *d, sluice_alg alg);
sluice_decision *sluice_hash_key(sluice_decision *d, const void *key, size_t len);
sluice_decision *sluice_hash_key_str(sluice_decision *d, const char *key);
sluice_decision *sluice_cache_key(sluice_decision *d, const void *key, size_t len);
sluice_decision *sluice_cache_key_str(sluice_decision *d, const char *key);
sluice_decision *sluice_ttl(sluice_decision *d, uint32_t secs);
sluice_decision *sluice_no_cache(sluice_decision *d);
sluice_decision *sluice_cache_tag(sluice_decision *d, const char *tag);
sluice_decision *sluice_set_request_header(sluice_decision *d, const char *name, const char *value);
sluice_decision *sluice_append_request_header(sluice_decision *d, const char *name, const char *value);
sluice_decision *sluice_remove_request_header(sluice_decision *d, const char *name);
sluice_decision *sluice_set_response_header(sluice_decision *d, const char *name, const char *value);
sluice_decision *sluice_append_response_header(sluice_decision *d, const char *name, const char *value);
sluice_decision *sluice_remove_response_header(sluice_decision *d, const char *name);
/* One more header on the client's response: a local response's list, or an append edit. */
sluice_decision *sluice_header(sluice_decision *d, const char *name, const char *value);
/* New request target upstream, origin form (`/path?query`). */
sluice_decision *sluice_rewrite(sluice_decision *d, const char *path_and_query);

/* ------------------------------------------------------------------ the response phase */

/* Only inside sluice_on_response (the host traps a call during sluice_decide). */
uint16_t sluice_response_status(void);
const char *sluice_response_header(const char *name);
size_t sluice_response_header_all(const char *name, const sluice_str **values);
size_t sluice_response_headers(const sluice_field **headers);
sluice_source sluice_response_source(void);
const char *sluice_response_endpoint(void); /* `host:port`; NULL unless from the upstream */

/* Serve the response (with the changes below; none changes nothing). */
sluice_response_decision *sluice_serve(void);
/* Answer with this instead (the upstream response is discarded, nothing stored). */
sluice_response_decision *sluice_serve_local(uint16_t status, const void *body, size_t len);
sluice_response_decision *sluice_serve_local_str(uint16_t status, const char *body);
/* Serve-only (no effect on a local answer): header edits, storage lifetime, tags, no-store. */
sluice_response_decision *sluice_serve_set_header(sluice_response_decision *r, const char *name, const char *value);
sluice_response_decision *sluice_serve_append_header(sluice_response_decision *r, const char *name, const char *value);
sluice_response_decision *sluice_serve_remove_header(sluice_response_decision *r, const char *name);
sluice_response_decision *sluice_serve_ttl(sluice_response_decision *r, uint32_t secs);
sluice_response_decision *sluice_serve_cache_tag(sluice_response_decision *r, const char *tag);
sluice_response_decision *sluice_serve_no_store(sluice_response_decision *r);
/* Local-answer-only: one more header in its list. */
sluice_response_decision *sluice_serve_header(sluice_response_decision *r, const char *name, const char *value);

/* ------------------------------------------------------------------ host services */

/* [policy.settings]: the value as text (numbers and booleans as TOML writes them). */
const char *sluice_config_get(const char *key);                      /* NULL when unset */
const char *sluice_config_get_or(const char *key, const char *dflt); /* never NULL if dflt isn't */
/* true/false/on/off/yes/no/1/0 (case-insensitive, trimmed); `dflt` when unset; any other
 * value fails the call (sluice_fail: "setting `k` = `v`: expected a boolean ..."). */
bool sluice_config_get_bool(const char *key, bool dflt);
/* A decimal integer (trimmed); `dflt` when unset; anything else fails the call. */
long long sluice_config_get_int(const char *key, long long dflt);

/* The endpoint the host would pick now (see WIT balancer.pick): `alg` SLUICE_ALG_POOL for
 * the pool's own, `key` NULL for none. NULL when the pool is unknown or none is eligible. */
const char *sluice_balancer_pick(const char *pool, sluice_alg alg, const void *key, size_t key_len);
const char *sluice_balancer_pick_with_key(const char *pool, const char *key);
size_t sluice_balancer_endpoints(const char *pool, const sluice_pool_endpoint **endpoints);

sluice_health sluice_health_status(const char *pool, const char *addr);

/* The host's HTTP cache (none without [cache]: peek false, purges 0). */
bool sluice_cache_peek(const void *key, size_t len, sluice_cache_entry *entry);
uint64_t sluice_cache_purge_key(const void *key, size_t len, bool soft);
uint64_t sluice_cache_purge_tag(const char *tag, bool soft); /* visits the whole store */

/* A line in the host's log (printf format; cut at 4 KiB by the host). */
void sluice_log(sluice_log_level level, const char *fmt, ...) SLUICE_PRINTF(2, 3);
#define sluice_log_trace(...) sluice_log(SLUICE_LOG_TRACE, __VA_ARGS__)
#define sluice_log_debug(...) sluice_log(SLUICE_LOG_DEBUG, __VA_ARGS__)
#define sluice_log_info(...) sluice_log(SLUICE_LOG_INFO, __VA_ARGS__)
#define sluice_log_warn(...) sluice_log(SLUICE_LOG_WARN, __VA_ARGS__)
#define sluice_log_error(...) sluice_log(SLUICE_LOG_ERROR, __VA_ARGS__)
/* Logs at error level and traps (the host applies its `fail` setting). */
SLUICE_NORETURN void sluice_fail(const char *fmt, ...) SLUICE_PRINTF(1, 2);

/* ------------------------------------------------------------------ arena helpers */

/* `n` bytes (8-aligned) freed when the call ends. */
void *sluice_alloc(size_t n);
/* A printf-formatted string freed when the call ends. */
const char *sluice_format(const char *fmt, ...) SLUICE_PRINTF(1, 2);
/* A NUL-terminated copy of `len` bytes of `s`, freed when the call ends. */
const char *sluice_strndup(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* SLUICE_H */
