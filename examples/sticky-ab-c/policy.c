/* Keeps each visitor on one endpoint of the `ab` pool, for A/B tests run across endpoints.
 * The C twin of examples/sticky-ab (Rust): the same request gets the same decision.
 *
 * The cookie `ab` is the hash key, so one cookie value always lands on the same endpoint
 * while the pool is unchanged. A visitor without the cookie gets an id derived from client
 * IP and user-agent (so their next requests agree even before the cookie comes back), which
 * is used as the hash key and set as the cookie:
 * `set-cookie: ab=<id>; Path=/; HttpOnly; SameSite=Lax`.
 *
 * Settings: pool (default "ab"). */
#include <stdint.h>
#include <string.h>

#include "sluice.h"

/* 64-bit FNV-1a (Fowler, Noll, Vo; draft-eastlake-fnv) over `n` bytes, continuing `hash`.
 * Stable, not secret: the id only spreads visitors. */
static uint64_t fnv1a_64(uint64_t hash, const void *bytes, size_t n) {
    const unsigned char *p = bytes;
    for (size_t i = 0; i < n; i++) hash = (hash ^ p[i]) * UINT64_C(0x00000100000001b3);
    return hash;
}
#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)

/* 16 lower-case hex digits of FNV-1a 64 over client IP, "\n", user-agent. */
static const char *visitor_id(void) {
    const char *ip = sluice_request_client_ip();
    const char *ua = sluice_request_header("user-agent");
    uint64_t h = fnv1a_64(FNV_OFFSET, ip, strlen(ip));
    h = fnv1a_64(h, "\n", 1);
    if (ua) h = fnv1a_64(h, ua, strlen(ua));
    char *id = sluice_alloc(17);
    for (int i = 15; i >= 0; i--, h >>= 4) id[i] = "0123456789abcdef"[h & 15];
    id[16] = 0;
    return id;
}

sluice_decision *sluice_decide(void) {
    const char *pool = sluice_config_get_or("pool", "ab");
    const char *id = sluice_request_cookie("ab");
    if (id && *id) return sluice_hash_key_str(sluice_forward(pool), id);
    id = visitor_id();
    sluice_decision *d = sluice_hash_key_str(sluice_forward(pool), id);
    return sluice_append_response_header(
        d, "set-cookie", sluice_format("ab=%s; Path=/; HttpOnly; SameSite=Lax", id));
}
