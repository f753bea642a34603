/*
 * sluice.c: the C SDK over wit-bindgen's C bindings (0.63) for sluice:policy@0.3.0.
 *
 * Compiled with the bindings of one world: `policy.h` (default) or `responder.h`
 * (-DSLUICE_RESPONDER, when the policy defines sluice_on_response).
 *
 * Memory. One bump arena per call: a static 16 KiB block, plus malloc'd overflow blocks.
 * - This file's strong `cabi_realloc` (the bindings' one is weak) puts what the host returns
 *   from an import into the arena, one byte longer and NUL-terminated, so the `const char *`
 *   the SDK hands out are the host's bytes, uncopied. Outside an import call (the WASI
 *   adapter, say) it is the bindings' realloc.
 * - Decisions are built in the arena too, and handed to the bindings' export glue as is.
 * - This file's strong post-return functions (the bindings' ones, which free() every list
 *   of the returned value, are weak) reset the arena instead, once the host has read the
 *   result. So a call makes no malloc/free at all unless it outgrows 16 KiB.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

#ifdef SLUICE_RESPONDER
#include "responder.h"
#define W(x) responder_##x
#define EXPORT_DECIDE exports_responder_decide
#define POST_DECIDE __wasm_export_exports_responder_decide_post_return
#else
#include "policy.h"
#define W(x) policy_##x
#define EXPORT_DECIDE exports_policy_decide
#define POST_DECIDE __wasm_export_exports_policy_decide_post_return
#endif

typedef W(string_t) wstr;
typedef W(list_u8_t) wbytes;
typedef sluice_policy_types_header_edit_t wedit;
typedef sluice_policy_types_header_t wheader;
typedef sluice_policy_types_local_response_t wlocal;

/* The public array types are read straight from what the host wrote. */
_Static_assert(sizeof(sluice_str) == sizeof(wbytes), "sluice_str layout");
_Static_assert(offsetof(sluice_str, len) == offsetof(wbytes, len), "sluice_str layout");
_Static_assert(sizeof(sluice_str) == sizeof(wstr), "sluice_str layout");
_Static_assert(sizeof(sluice_field) == sizeof(wheader), "sluice_field layout");
_Static_assert(offsetof(sluice_field, value) == offsetof(wheader, value), "sluice_field layout");
_Static_assert(sizeof(sluice_pool_endpoint) == sizeof(sluice_policy_balancer_endpoint_t), "endpoint layout");
_Static_assert(offsetof(sluice_pool_endpoint, weight) == offsetof(sluice_policy_balancer_endpoint_t, weight), "endpoint layout");
_Static_assert(offsetof(sluice_pool_endpoint, healthy) == offsetof(sluice_policy_balancer_endpoint_t, healthy), "endpoint layout");
_Static_assert(offsetof(sluice_pool_endpoint, in_flight) == offsetof(sluice_policy_balancer_endpoint_t, in_flight), "endpoint layout");
_Static_assert(offsetof(sluice_pool_endpoint, ewma_latency_us) == offsetof(sluice_policy_balancer_endpoint_t, ewma_latency_us), "endpoint layout");
_Static_assert(sizeof(sluice_cache_entry) == sizeof(sluice_policy_cache_entry_t), "cache entry layout");
_Static_assert(offsetof(sluice_cache_entry, status) == offsetof(sluice_policy_cache_entry_t, status), "cache entry layout");
_Static_assert(offsetof(sluice_cache_entry, size) == offsetof(sluice_policy_cache_entry_t, size), "cache entry layout");
_Static_assert(offsetof(sluice_cache_entry, tags) == offsetof(sluice_policy_cache_entry_t, tags), "cache entry layout");

/* ================================================================== arena */

#define ARENA0_SIZE 16384

typedef struct chunk {
    struct chunk *next;
} chunk;

static unsigned char arena0[ARENA0_SIZE] __attribute__((aligned(16)));
static unsigned char *a_cur = arena0;
static unsigned char *a_end = arena0 + ARENA0_SIZE;
static chunk *a_extra; /* overflow blocks, freed at reset */
static int importing;  /* inside a host import: cabi_realloc allocates in the arena */

static void arena_reset(void) {
    while (a_extra) {
        chunk *next = a_extra->next;
        free(a_extra);
        a_extra = next;
    }
    a_cur = arena0;
    a_end = arena0 + ARENA0_SIZE;
}

static void *arena_slow(size_t size, size_t align) {
    size_t want = size + align + sizeof(chunk);
    if (want < 2 * ARENA0_SIZE) want = 2 * ARENA0_SIZE;
    chunk *c = malloc(want);
    if (!c) __builtin_trap();
    c->next = a_extra;
    a_extra = c;
    a_cur = (unsigned char *)(c + 1);
    a_end = (unsigned char *)c + want;
    uintptr_t p = ((uintptr_t)a_cur + align - 1) & ~(uintptr_t)(align - 1);
    a_cur = (unsigned char *)p + size;
    return (void *)p;
}

static inline void *arena_alloc(size_t size, size_t align) {
    uintptr_t p = ((uintptr_t)a_cur + align - 1) & ~(uintptr_t)(align - 1);
    if (p >= (uintptr_t)a_cur && p <= (uintptr_t)a_end && size <= (size_t)(a_end - (unsigned char *)p)) {
        a_cur = (unsigned char *)p + size;
        return (void *)p;
    }
    return arena_slow(size, align);
}

/* Grows the block at `old` (of `old_size`): in place when it is the last one. */
static void *arena_grow(void *old, size_t old_size, size_t new_size, size_t align) {
    if (old && (unsigned char *)old + old_size == a_cur &&
        new_size <= (size_t)(a_end - (unsigned char *)old)) {
        a_cur = (unsigned char *)old + new_size;
        return old;
    }
    void *p = arena_alloc(new_size, align);
    if (old && old_size) memcpy(p, old, old_size < new_size ? old_size : new_size);
    return p;
}

/* Overrides the bindings' weak cabi_realloc (same export). */
__attribute__((__export_name__("cabi_realloc")))
void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    if (!importing) {
        if (new_size == 0) return (void *)align;
        void *ret = realloc(ptr, new_size);
        if (!ret) abort();
        return ret;
    }
    unsigned char *p = arena_grow(ptr, ptr ? old_size + 1 : 0, new_size + 1, align ? align : 1);
    p[new_size] = 0; /* what the host writes is NUL-terminated */
    return p;
}

#define IMPORT(call) do { importing = 1; call; importing = 0; } while (0)

void *sluice_alloc(size_t n) { return arena_alloc(n ? n : 1, 8); }

static char *copy_n(const void *s, size_t len) {
    char *p = arena_alloc(len + 1, 1);
    if (len) memcpy(p, s, len);
    p[len] = 0;
    return p;
}

const char *sluice_strndup(const char *s, size_t len) { return copy_n(s, len); }

static char *copy_lower(const char *s, size_t len) {
    char *p = arena_alloc(len + 1, 1);
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        p[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    p[len] = 0;
    return p;
}

/* printf-style formatting into the arena, without libc's stdio: vsnprintf would link
 * wasi-libc's stdio (stdout/stderr FILEs and their fd_write/fd_seek/fd_close imports), and
 * so the WASI adapter into every component. Supports flags `-0+ #`, width and precision
 * (also `*`), lengths hh h l ll z j t L, and d i u o x X c s p %. Floating point (f F e E
 * g G a A) prints fixed-point like %f, exact below 2^64, precision at most 17. */
typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t more) {
    if (b->n + more + 1 <= b->cap) return;
    size_t cap = b->cap * 2;
    if (cap < b->n + more + 1) cap = b->n + more + 1;
    b->p = arena_grow(b->p, b->cap, cap, 1);
    b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n) {
    sb_reserve(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void sb_pad(sbuf *b, char c, long n) {
    if (n <= 0) return;
    sb_reserve(b, (size_t)n);
    memset(b->p + b->n, c, (size_t)n);
    b->n += (size_t)n;
}

/* One converted field: prefix (sign, 0x), zero padding to `zeros`, body, padded to width. */
static void sb_field(sbuf *b, const char *prefix, size_t pl, long zeros, const char *body,
                     size_t bl, long width, bool left, bool zero_pad) {
    long total = (long)(pl + bl) + (zeros > 0 ? zeros : 0);
    if (zero_pad && !left && width > total) {
        zeros += width - total;
        total = width;
    }
    if (!left) sb_pad(b, ' ', width - total);
    sb_put(b, prefix, pl);
    sb_pad(b, '0', zeros);
    sb_put(b, body, bl);
    if (left) sb_pad(b, ' ', width - total);
}

static const char *vformat(const char *fmt, va_list ap) {
    sbuf b = {arena_alloc(64, 1), 0, 64};
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            const char *pct = strchr(f, '%');
            size_t n = pct ? (size_t)(pct - f) : strlen(f);
            sb_put(&b, f, n);
            f += n - 1;
            continue;
        }
        const char *spec = f++;
        bool left = false, zero = false, plus = false, space = false, alt = false;
        for (;; f++) {
            if (*f == '-') left = true;
            else if (*f == '0') zero = true;
            else if (*f == '+') plus = true;
            else if (*f == ' ') space = true;
            else if (*f == '#') alt = true;
            else break;
        }
        long width = 0, prec = -1;
        if (*f == '*') {
            width = va_arg(ap, int);
            if (width < 0) { left = true; width = -width; }
            f++;
        } else {
            while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
        }
        if (*f == '.') {
            f++;
            prec = 0;
            if (*f == '*') {
                prec = va_arg(ap, int);
                f++;
            } else {
                while (*f >= '0' && *f <= '9') prec = prec * 10 + (*f++ - '0');
            }
        }
        int len = 0; /* 1 hh, 2 h, 3 l, 4 ll, 5 z/j/t, 6 L */
        if (f[0] == 'h' && f[1] == 'h') { len = 1; f += 2; }
        else if (*f == 'h') { len = 2; f++; }
        else if (f[0] == 'l' && f[1] == 'l') { len = 4; f += 2; }
        else if (*f == 'l') { len = 3; f++; }
        else if (*f == 'z' || *f == 'j' || *f == 't') { len = *f == 'j' ? 4 : 5; f++; }
        else if (*f == 'L') { len = 6; f++; }
        char c = *f;
        char digits[400];
        char *end = digits + sizeof digits, *d = end;
        switch (c) {
        case '%':
            sb_put(&b, "%", 1);
            break;
        case 'c': {
            char ch = (char)va_arg(ap, int);
            sb_field(&b, "", 0, 0, &ch, 1, width, left, false);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            size_t n = prec >= 0 ? strnlen(s, (size_t)prec) : strlen(s);
            sb_field(&b, "", 0, 0, s, n, width, left, false);
            break;
        }
        case 'd': case 'i': case 'u': case 'o': case 'x': case 'X': case 'p': {
            unsigned long long v;
            bool neg = false;
            if (c == 'p') {
                v = (uintptr_t)va_arg(ap, void *);
            } else if (c == 'd' || c == 'i') {
                long long sv;
                switch (len) {
                case 1: sv = (signed char)va_arg(ap, int); break;
                case 2: sv = (short)va_arg(ap, int); break;
                case 3: sv = va_arg(ap, long); break;
                case 4: sv = va_arg(ap, long long); break;
                case 5: sv = (long long)va_arg(ap, ptrdiff_t); break;
                default: sv = va_arg(ap, int); break;
                }
                neg = sv < 0;
                v = neg ? 0ULL - (unsigned long long)sv : (unsigned long long)sv;
            } else {
                switch (len) {
                case 1: v = (unsigned char)va_arg(ap, unsigned); break;
                case 2: v = (unsigned short)va_arg(ap, unsigned); break;
                case 3: v = va_arg(ap, unsigned long); break;
                case 4: v = va_arg(ap, unsigned long long); break;
                case 5: v = va_arg(ap, size_t); break;
                default: v = va_arg(ap, unsigned); break;
                }
            }
            unsigned base = (c == 'o') ? 8 : (c == 'x' || c == 'X' || c == 'p') ? 16 : 10;
            const char *dig = c == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
            if (!(prec == 0 && v == 0)) {
                unsigned long long t = v;
                do *--d = dig[t % base]; while ((t /= base));
            }
            char prefix[3];
            size_t pl = 0;
            if (neg) prefix[pl++] = '-';
            else if ((c == 'd' || c == 'i') && plus) prefix[pl++] = '+';
            else if ((c == 'd' || c == 'i') && space) prefix[pl++] = ' ';
            if (c == 'p' || (alt && (c == 'x' || c == 'X') && v)) {
                prefix[pl++] = '0';
                prefix[pl++] = c == 'X' ? 'X' : 'x';
            }
            long nd = (long)(end - d);
            long zeros = prec >= 0 ? prec - nd : 0;
            if (c == 'o' && alt && zeros <= 0 && (nd == 0 || *d != '0')) zeros = 1;
            sb_field(&b, prefix, pl, zeros, d, (size_t)nd, width, left, zero && prec < 0);
            break;
        }
        case 'f': case 'F': case 'e': case 'E': case 'g': case 'G': case 'a': case 'A': {
            double v = len == 6 ? (double)va_arg(ap, long double) : va_arg(ap, double);
            if (prec < 0) prec = 6;
            if (prec > 17) prec = 17;
            char prefix[1];
            size_t pl = 0;
            if (v < 0 || (v == 0 && 1 / v < 0)) { prefix[pl++] = '-'; v = -v; }
            else if (plus) prefix[pl++] = '+';
            else if (space) prefix[pl++] = ' ';
            if (v != v || v == __builtin_inf()) {
                const char *s = v != v ? "nan" : "inf";
                sb_field(&b, prefix, pl, 0, s, 3, width, left, false);
                break;
            }
            double scale = 1;
            for (long i = 0; i < prec; i++) scale *= 10;
            /* integer part and `prec` fraction digits */
            double ip;
            double fr = __builtin_modf(v, &ip);
            double x = fr * scale, fd = __builtin_floor(x);
            if (x - fd > 0.5) fd += 1;
            else if (x - fd == 0.5) { /* a tie only if fr * scale was exact; then to even */
                double err = __builtin_fma(fr, scale, -x);
                double last = prec ? fd : ip;
                if (err > 0 || (err == 0 && __builtin_fmod(last, 2) != 0)) fd += 1;
            }
            if (fd >= scale) { fd -= scale; ip += 1; }
            if (prec > 0 || alt) {
                for (long i = 0; i < prec; i++) {
                    double q = __builtin_floor(fd / 10);
                    *--d = (char)('0' + (int)(fd - q * 10));
                    fd = q;
                }
                *--d = '.';
            }
            if (ip < 18446744073709551616.0) { /* exact below 2^64 */
                unsigned long long u = (unsigned long long)ip;
                do *--d = (char)('0' + u % 10); while ((u /= 10));
            } else {
                while (ip >= 1 && d > digits) {
                    double q = __builtin_floor(ip / 10);
                    *--d = (char)('0' + (int)(ip - q * 10));
                    ip = q;
                }
            }
            sb_field(&b, prefix, pl, 0, d, (size_t)(end - d), width, left, zero);
            break;
        }
        case 'n':
            (void)va_arg(ap, void *);
            break;
        default: /* unknown or truncated: print it as written */
            sb_put(&b, spec, (size_t)(f - spec) + (c ? 1 : 0));
            if (!c) f--;
            break;
        }
    }
    b.p[b.n] = 0;
    if ((unsigned char *)b.p + b.cap == a_cur) a_cur = (unsigned char *)b.p + b.n + 1; /* give back the rest */
    return b.p;
}

const char *sluice_format(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

/* ================================================================== wit helpers */

static inline wstr wstr_of(const char *s) {
    wstr w = {(uint8_t *)s, s ? strlen(s) : 0};
    return w;
}

/* A host string as `const char *`: already NUL-terminated by cabi_realloc. */
static inline const char *cstr(wstr s) { return s.len ? (const char *)s.ptr : ""; }

/* Makes every element pointer of a host array valid ("" for empty ones). */
static void fix_strs(sluice_str *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!v[i].len) v[i].ptr = "";
}

static void fix_headers(sluice_field *h, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!h[i].name.len) h[i].name.ptr = "";
        if (!h[i].value.len) h[i].value.ptr = "";
    }
}

/* ================================================================== per-call state */

enum { C_METHOD, C_SCHEME, C_AUTHORITY, C_PATH, C_QUERY, C_CLIENT_IP, C_N };

static struct {
    unsigned have; /* bit per C_* */
    const char *v[C_N];
    int has_status;
    uint16_t status;
} cur;

static void call_begin(void) {
    arena_reset();
    cur.have = 0;
    cur.has_status = 0;
}

/* ================================================================== UTF-8 and whitespace,
 * exactly as Rust's str::from_utf8 and char::is_whitespace (White_Space) see them. */

static bool utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; cp = c & 0x07; }
        else return false;
        if (i + need >= n) return false;
        for (size_t k = 1; k <= need; k++) {
            unsigned char d = s[i + k];
            if ((d & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        if (need == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return false;
        if (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)) return false;
        i += need + 1;
    }
    return true;
}

/* Length of the White_Space char at s[0..n) (0 if none). */
static size_t ws_at(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return 1;
    if (c < 0x80) return 0;
    if (n >= 2 && c == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3) {
        uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if ((c & 0xF0) == 0xE0 &&
            (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
             cp == 0x202F || cp == 0x205F || cp == 0x3000))
            return 3;
    }
    return 0;
}

/* Length of the White_Space char ending at s[n) (0 if none); s valid UTF-8. */
static size_t ws_before(const unsigned char *s, size_t n) {
    if (!n) return 0;
    size_t start = n - 1;
    while (start > 0 && (s[start] & 0xC0) == 0x80 && n - start < 4) start--;
    size_t len = n - start;
    return ws_at(s + start, len) == len ? len : 0;
}

static void trim_start_ws(const unsigned char **s, size_t *n) {
    size_t k;
    while (*n && (k = ws_at(*s, *n))) { *s += k; *n -= k; }
}

static void trim_end_ws(const unsigned char *s, size_t *n) {
    size_t k;
    while ((k = ws_before(s, *n))) *n -= k;
}

/* ================================================================== request */

#define CACHED(slot, expr)                         \
    do {                                           \
        if (!(cur.have & (1u << (slot)))) {        \
            cur.v[slot] = (expr);                  \
            cur.have |= 1u << (slot);              \
        }                                          \
        return cur.v[slot];                        \
    } while (0)

static const char *fetch_plain(void (*f)(wstr *)) {
    wstr s;
    IMPORT(f(&s));
    return cstr(s);
}

static const char *fetch_opt(bool (*f)(wstr *)) {
    wstr s;
    bool some;
    IMPORT(some = f(&s));
    return some ? cstr(s) : NULL;
}

const char *sluice_request_method(void) { CACHED(C_METHOD, fetch_plain(sluice_policy_request_method)); }
const char *sluice_request_scheme(void) { CACHED(C_SCHEME, fetch_plain(sluice_policy_request_scheme)); }
const char *sluice_request_authority(void) { CACHED(C_AUTHORITY, fetch_plain(sluice_policy_request_authority)); }
const char *sluice_request_path(void) { CACHED(C_PATH, fetch_plain(sluice_policy_request_path)); }
const char *sluice_request_query(void) { CACHED(C_QUERY, fetch_opt(sluice_policy_request_query)); }
const char *sluice_request_client_ip(void) { CACHED(C_CLIENT_IP, fetch_plain(sluice_policy_request_client_ip)); }
const char *sluice_request_tls_sni(void) { return fetch_opt(sluice_policy_request_tls_sni); }
const char *sluice_request_http_version(void) { return fetch_plain(sluice_policy_request_http_version); }

const char *sluice_request_header(const char *name) {
    wstr n = wstr_of(name);
    wbytes v;
    bool some;
    IMPORT(some = sluice_policy_request_header(&n, &v));
    return some ? (v.len ? (const char *)v.ptr : "") : NULL;
}

size_t sluice_request_header_all(const char *name, const sluice_str **values) {
    wstr n = wstr_of(name);
    W(list_list_u8_t) l;
    IMPORT(sluice_policy_request_header_all(&n, &l));
    fix_strs((sluice_str *)l.ptr, l.len);
    if (values) *values = (const sluice_str *)l.ptr;
    return l.len;
}

size_t sluice_request_headers(const sluice_field **headers) {
    sluice_policy_request_list_field_t l;
    IMPORT(sluice_policy_request_headers(&l));
    fix_headers((sluice_field *)l.ptr, l.len);
    if (headers) *headers = (const sluice_field *)l.ptr;
    return l.len;
}

/* The host part of an authority: [v6] kept whole, else without a `:digits*` suffix. */
static size_t host_len(const char *a, size_t n) {
    if (n && a[0] == '[') {
        const char *e = memchr(a, ']', n);
        return e ? (size_t)(e - a) + 1 : n;
    }
    for (size_t i = n; i-- > 0;) {
        if (a[i] == ':') {
            for (size_t j = i + 1; j < n; j++)
                if (a[j] < '0' || a[j] > '9') return n;
            return i;
        }
    }
    return n;
}

const char *sluice_request_host(void) {
    const char *a = sluice_request_authority();
    size_t n = strlen(a);
    size_t h = host_len(a, n);
    return h == n ? a : copy_n(a, h);
}

/* Cookie `name` in one Cookie line, as guest-sdk/src/request.rs `cookie_in`. */
static const char *cookie_in(const char *line, size_t n, const char *name, size_t name_len) {
    if (!utf8_valid((const unsigned char *)line, n)) return NULL;
    const char *end = line + n;
    const char *p = line;
    for (;;) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        /* trim ' ' and '\t' both ends */
        const char *a = p, *b = pe;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        const char *eq = memchr(a, '=', (size_t)(b - a));
        if (eq) {
            size_t nl = (size_t)(eq - a);
            trim_end_ws((const unsigned char *)a, &nl);
            if (nl == name_len && memcmp(a, name, nl) == 0) {
                const unsigned char *v = (const unsigned char *)eq + 1;
                size_t vl = (size_t)(b - (const char *)v);
                trim_start_ws(&v, &vl);
                return copy_n(v, vl);
            }
        }
        if (!semi) return NULL;
        p = semi + 1;
    }
}

const char *sluice_request_cookie(const char *name) {
    const sluice_str *lines;
    size_t n = sluice_request_header_all("cookie", &lines);
    size_t name_len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        const char *v = cookie_in(lines[i].ptr, lines[i].len, name, name_len);
        if (v) return v;
    }
    return NULL;
}

const char *sluice_request_query_param(const char *name) {
    const char *q = sluice_request_query();
    if (!q) return NULL;
    size_t name_len = strlen(name);
    const char *p = q;
    for (;;) {
        const char *amp = strchr(p, '&');
        const char *pe = amp ? amp : p + strlen(p);
        if (pe > p) {
            const char *eq = memchr(p, '=', (size_t)(pe - p));
            const char *ne = eq ? eq : pe;
            if ((size_t)(ne - p) == name_len && memcmp(p, name, name_len) == 0)
                return eq ? copy_n(eq + 1, (size_t)(pe - eq - 1)) : "";
        }
        if (!amp) return NULL;
        p = amp + 1;
    }
}

typedef struct {
    const char *name, *value, *raw;
    size_t nl, vl, rl, idx;
} qpair;

static int bytes_cmp(const char *a, size_t al, const char *b, size_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c) return c;
    return al < bl ? -1 : al > bl;
}

static int qpair_cmp(const void *x, const void *y) {
    const qpair *a = x, *b = y;
    int c = bytes_cmp(a->name, a->nl, b->name, b->nl);
    if (!c) c = bytes_cmp(a->value, a->vl, b->value, b->vl);
    if (!c) c = a->idx < b->idx ? -1 : a->idx > b->idx;
    return c;
}

/* The non-empty pairs of `q`, sorted (stable); returns the count. */
static size_t sorted_pairs(const char *q, qpair **out) {
    size_t cap = 1;
    for (const char *p = q; *p; p++) cap += *p == '&';
    qpair *v = arena_alloc(cap * sizeof(qpair), 8);
    size_t n = 0;
    const char *p = q;
    for (;;) {
        const char *amp = strchr(p, '&');
        const char *pe = amp ? amp : p + strlen(p);
        if (pe > p) {
            const char *eq = memchr(p, '=', (size_t)(pe - p));
            qpair *e = &v[n];
            e->raw = p;
            e->rl = (size_t)(pe - p);
            e->name = p;
            e->nl = (size_t)((eq ? eq : pe) - p);
            e->value = eq ? eq + 1 : pe;
            e->vl = eq ? (size_t)(pe - eq - 1) : 0;
            e->idx = n++;
        }
        if (!amp) break;
        p = amp + 1;
    }
    if (n > 1) qsort(v, n, sizeof(qpair), qpair_cmp);
    *out = v;
    return n;
}

size_t sluice_request_query_params(const sluice_param **params) {
    const char *q = sluice_request_query();
    qpair *v;
    size_t n = q ? sorted_pairs(q, &v) : 0;
    sluice_param *out = arena_alloc((n ? n : 1) * sizeof(sluice_param), 8);
    for (size_t i = 0; i < n; i++) {
        out[i].name = copy_n(v[i].name, v[i].nl);
        out[i].value = copy_n(v[i].value, v[i].vl);
    }
    if (params) *params = out;
    return n;
}

static const char *join_sorted(const char *q) {
    qpair *v;
    size_t n = sorted_pairs(q, &v);
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += v[i].rl + (i > 0);
    char *out = arena_alloc(len + 1, 1), *w = out;
    for (size_t i = 0; i < n; i++) {
        if (i) *w++ = '&';
        memcpy(w, v[i].raw, v[i].rl);
        w += v[i].rl;
    }
    *w = 0;
    return out;
}

const char *sluice_request_sorted_query(void) {
    const char *q = sluice_request_query();
    return q ? join_sorted(q) : NULL;
}

const char *sluice_request_default_cache_key(void) {
    const char *scheme = sluice_request_scheme();
    const char *a = sluice_request_authority();
    const char *path = sluice_request_path();
    const char *q = sluice_request_query();
    size_t an = strlen(a), h = host_len(a, an);
    const char *port;
    size_t pl;
    if (h < an && a[h] == ':') {
        port = a + h + 1;
        pl = an - h - 1;
    } else {
        port = strcmp(scheme, "https") == 0 ? "443" : "80";
        pl = strlen(port);
    }
    const char *sorted = q ? join_sorted(q) : "";
    size_t sl = strlen(scheme), ptl = strlen(path), ql = strlen(sorted);
    char *out = arena_alloc(sl + 3 + h + 1 + pl + ptl + 1 + ql + 1, 1), *w = out;
    memcpy(w, scheme, sl); w += sl;
    memcpy(w, "://", 3); w += 3;
    for (size_t i = 0; i < h; i++) {
        char c = a[i];
        *w++ = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    *w++ = ':';
    memcpy(w, port, pl); w += pl;
    memcpy(w, path, ptl); w += ptl;
    if (ql) {
        *w++ = '?';
        memcpy(w, sorted, ql); w += ql;
    }
    *w = 0;
    return out;
}

/* ================================================================== decisions */

struct sluice_decision {
    sluice_policy_types_decision_t raw;
    size_t cap_req, cap_resp, cap_tags, cap_hdrs;
};

#define IS_FWD(d) ((d)->raw.tag == SLUICE_POLICY_TYPES_DECISION_FORWARD)
#define FWD(d) ((d)->raw.val.forward)

/* Appends one zeroed element to a list {ptr, len} with capacity *cap; returns it. */
#define LIST_PUSH(list, cap)                                                                 \
    (((list).len == *(cap)                                                                   \
          ? ((list).ptr = arena_grow((list).ptr, *(cap) * sizeof(*(list).ptr),               \
                                     (*(cap) ? *(cap) * 2 : 4) * sizeof(*(list).ptr), 8),    \
             *(cap) = *(cap) ? *(cap) * 2 : 4)                                               \
          : 0),                                                                              \
     memset(&(list).ptr[(list).len], 0, sizeof(*(list).ptr)), &(list).ptr[(list).len++])

static inline wstr wcopy(const char *s) {
    size_t n = s ? strlen(s) : 0;
    wstr w = {(uint8_t *)copy_n(s, n), n};
    return w;
}

static inline wbytes bcopy_(const void *s, size_t n) {
    wbytes w = {(uint8_t *)copy_n(s, n), n};
    return w;
}

static sluice_decision *new_forward(const char *pool) {
    sluice_decision *d = arena_alloc(sizeof *d, 8);
    memset(d, 0, sizeof *d);
    d->raw.tag = SLUICE_POLICY_TYPES_DECISION_FORWARD;
    if (pool) {
        FWD(d).target.pool.is_some = true;
        FWD(d).target.pool.val = wcopy(pool);
    }
    return d;
}

sluice_decision *sluice_forward(const char *pool) { return new_forward(pool); }
sluice_decision *sluice_forward_default(void) { return new_forward(NULL); }

sluice_decision *sluice_respond(uint16_t status, const void *body, size_t len) {
    sluice_decision *d = arena_alloc(sizeof *d, 8);
    memset(d, 0, sizeof *d);
    d->raw.tag = SLUICE_POLICY_TYPES_DECISION_RESPOND;
    d->raw.val.respond.status = status;
    d->raw.val.respond.body = bcopy_(body, len);
    return d;
}

sluice_decision *sluice_respond_str(uint16_t status, const char *body) {
    return sluice_respond(status, body, body ? strlen(body) : 0);
}

bool sluice_is_forward(const sluice_decision *d) { return IS_FWD(d); }

sluice_decision *sluice_endpoint(sluice_decision *d, const char *addr) {
    if (IS_FWD(d)) {
        FWD(d).target.endpoint.is_some = true;
        FWD(d).target.endpoint.val = wcopy(addr);
    }
    return d;
}

sluice_decision *sluice_algorithm(sluice_decision *d, sluice_alg alg) {
    if (IS_FWD(d)) {
        FWD(d).target.algorithm.is_some = alg >= SLUICE_ALG_ROUND_ROBIN && alg <= SLUICE_ALG_MAGLEV;
        FWD(d).target.algorithm.val = (sluice_policy_types_algorithm_t)alg;
    }
    return d;
}

sluice_decision *sluice_hash_key(sluice_decision *d, const void *key, size_t len) {
    if (IS_FWD(d)) {
        FWD(d).target.hash_key.is_some = true;
        FWD(d).target.hash_key.val = bcopy_(key, len);
    }
    return d;
}

sluice_decision *sluice_hash_key_str(sluice_decision *d, const char *key) {
    return sluice_hash_key(d, key, key ? strlen(key) : 0);
}

sluice_decision *sluice_cache_key(sluice_decision *d, const void *key, size_t len) {
    if (IS_FWD(d)) {
        FWD(d).cache.key.is_some = true;
        FWD(d).cache.key.val = bcopy_(key, len);
    }
    return d;
}

sluice_decision *sluice_cache_key_str(sluice_decision *d, const char *key) {
    return sluice_cache_key(d, key, key ? strlen(key) : 0);
}

sluice_decision *sluice_ttl(sluice_decision *d, uint32_t secs) {
    if (IS_FWD(d)) {
        FWD(d).cache.ttl_secs.is_some = true;
        FWD(d).cache.ttl_secs.val = secs;
    }
    return d;
}

sluice_decision *sluice_no_cache(sluice_decision *d) {
    if (IS_FWD(d)) FWD(d).cache.bypass = true;
    return d;
}

sluice_decision *sluice_cache_tag(sluice_decision *d, const char *tag) {
    if (IS_FWD(d)) *LIST_PUSH(FWD(d).cache.tags, &d->cap_tags) = wcopy(tag);
    return d;
}

static void push_edit(sluice_policy_types_list_header_edit_t *list, size_t *cap, uint8_t op,
                      const char *name, const char *value) {
    wedit *e = LIST_PUSH(*list, cap);
    size_t nl = strlen(name), vl = value ? strlen(value) : 0;
    e->op = op;
    e->name.ptr = (uint8_t *)copy_lower(name, nl);
    e->name.len = nl;
    e->value = bcopy_(value, vl);
}

static sluice_decision *request_edit(sluice_decision *d, uint8_t op, const char *name, const char *value) {
    if (IS_FWD(d)) push_edit(&FWD(d).request_edits, &d->cap_req, op, name, value);
    return d;
}

/* On a local response: Set/Remove drop every header called `name`, Set/Append add one. */
static void local_edit(wlocal *r, size_t *cap, uint8_t op, const char *name, const char *value) {
    size_t nl = strlen(name);
    const char *lower = copy_lower(name, nl);
    if (op != SLUICE_POLICY_TYPES_EDIT_OP_APPEND) {
        size_t k = 0;
        for (size_t i = 0; i < r->headers.len; i++) {
            wheader *h = &r->headers.ptr[i];
            if (!(h->name.len == nl && memcmp(h->name.ptr, lower, nl) == 0)) r->headers.ptr[k++] = *h;
        }
        r->headers.len = k;
    }
    if (op != SLUICE_POLICY_TYPES_EDIT_OP_REMOVE) {
        wheader *h = LIST_PUSH(r->headers, cap);
        size_t vl = value ? strlen(value) : 0;
        h->name.ptr = (uint8_t *)lower;
        h->name.len = nl;
        h->value = bcopy_(value, vl);
    }
}

static sluice_decision *response_edit(sluice_decision *d, uint8_t op, const char *name, const char *value) {
    if (IS_FWD(d))
        push_edit(&FWD(d).response_edits, &d->cap_resp, op, name, value);
    else
        local_edit(&d->raw.val.respond, &d->cap_hdrs, op, name, value);
    return d;
}

sluice_decision *sluice_set_request_header(sluice_decision *d, const char *name, const char *value) {
    return request_edit(d, SLUICE_POLICY_TYPES_EDIT_OP_SET, name, value);
}
sluice_decision *sluice_append_request_header(sluice_decision *d, const char *name, const char *value) {
    return request_edit(d, SLUICE_POLICY_TYPES_EDIT_OP_APPEND, name, value);
}
sluice_decision *sluice_remove_request_header(sluice_decision *d, const char *name) {
    return request_edit(d, SLUICE_POLICY_TYPES_EDIT_OP_REMOVE, name, NULL);
}
sluice_decision *sluice_set_response_header(sluice_decision *d, const char *name, const char *value) {
    return response_edit(d, SLUICE_POLICY_TYPES_EDIT_OP_SET, name, value);
}
sluice_decision *sluice_append_response_header(sluice_decision *d, const char *name, const char *value) {
    return response_edit(d, SLUICE_POLICY_TYPES_EDIT_OP_APPEND, name, value);
}
sluice_decision *sluice_remove_response_header(sluice_decision *d, const char *name) {
    return response_edit(d, SLUICE_POLICY_TYPES_EDIT_OP_REMOVE, name, NULL);
}
sluice_decision *sluice_header(sluice_decision *d, const char *name, const char *value) {
    return response_edit(d, SLUICE_POLICY_TYPES_EDIT_OP_APPEND, name, value);
}

sluice_decision *sluice_rewrite(sluice_decision *d, const char *path_and_query) {
    if (IS_FWD(d)) {
        FWD(d).rewrite.is_some = true;
        FWD(d).rewrite.val = wcopy(path_and_query);
    }
    return d;
}

/* ================================================================== algorithms */

static const char *const ALG_NAMES[] = {
    "round_robin", "weighted_round_robin", "least_connections", "least_request",
    "least_response_time", "random", "ip_hash", "ring_hash", "maglev",
};

const char *sluice_algorithm_name(sluice_alg alg) {
    return alg >= SLUICE_ALG_ROUND_ROBIN && alg <= SLUICE_ALG_MAGLEV ? ALG_NAMES[alg] : NULL;
}

sluice_alg sluice_algorithm_parse(const char *name) {
    if (!name) return SLUICE_ALG_POOL;
    const unsigned char *s = (const unsigned char *)name;
    size_t n = strlen(name);
    trim_start_ws(&s, &n);
    trim_end_ws(s, &n);
    for (int a = SLUICE_ALG_ROUND_ROBIN; a <= SLUICE_ALG_MAGLEV; a++) {
        const char *want = ALG_NAMES[a];
        if (strlen(want) != n) continue;
        size_t i = 0;
        for (; i < n; i++) {
            unsigned char c = s[i];
            if (c >= 'A' && c <= 'Z') c += 32;
            if (c == '-') c = '_';
            if (c != (unsigned char)want[i]) break;
        }
        if (i == n) return (sluice_alg)a;
    }
    return SLUICE_ALG_POOL;
}

bool sluice_algorithm_is_keyed(sluice_alg alg) {
    return alg == SLUICE_ALG_IP_HASH || alg == SLUICE_ALG_RING_HASH || alg == SLUICE_ALG_MAGLEV;
}

/* ================================================================== host services */

const char *sluice_config_get(const char *key) {
    wstr k = wstr_of(key), v;
    bool some;
    IMPORT(some = sluice_policy_config_get(&k, &v));
    return some ? cstr(v) : NULL;
}

const char *sluice_config_get_or(const char *key, const char *dflt) {
    const char *v = sluice_config_get(key);
    return v ? v : dflt;
}

/* `v` trimmed (Unicode White_Space) and ASCII-lower-cased, in the arena. */
static const char *trimmed_lower(const char *v, size_t *len) {
    const unsigned char *s = (const unsigned char *)v;
    size_t n = strlen(v);
    trim_start_ws(&s, &n);
    trim_end_ws(s, &n);
    *len = n;
    return copy_lower((const char *)s, n);
}

bool sluice_config_get_bool(const char *key, bool dflt) {
    const char *v = sluice_config_get(key);
    if (!v) return dflt;
    size_t n;
    const char *t = trimmed_lower(v, &n);
    if (!strcmp(t, "true") || !strcmp(t, "on") || !strcmp(t, "yes") || !strcmp(t, "1")) return true;
    if (!strcmp(t, "false") || !strcmp(t, "off") || !strcmp(t, "no") || !strcmp(t, "0")) return false;
    sluice_fail("setting `%s` = `%s`: expected a boolean (true/false/on/off/yes/no/1/0)", key, v);
}

long long sluice_config_get_int(const char *key, long long dflt) {
    const char *v = sluice_config_get(key);
    if (!v) return dflt;
    size_t n;
    const char *t = trimmed_lower(v, &n);
    const char *p = t;
    if (*p == '+' || *p == '-') p++;
    bool ok = *p != 0;
    for (const char *q = p; *q; q++) ok &= *q >= '0' && *q <= '9';
    long long out = 0;
    if (ok) {
        char *endp;
        errno = 0;
        out = strtoll(t, &endp, 10);
        ok = errno == 0 && *endp == 0;
    }
    if (!ok) sluice_fail("setting `%s` = `%s`: expected an integer", key, v);
    return out;
}

const char *sluice_balancer_pick(const char *pool, sluice_alg alg, const void *key, size_t key_len) {
    wstr p = wstr_of(pool), out;
    sluice_policy_balancer_algorithm_t a = (sluice_policy_balancer_algorithm_t)alg;
    wbytes k = {(uint8_t *)key, key_len};
    bool has_alg = alg >= SLUICE_ALG_ROUND_ROBIN && alg <= SLUICE_ALG_MAGLEV;
    bool some;
    IMPORT(some = sluice_policy_balancer_pick(&p, has_alg ? &a : NULL, key ? &k : NULL, &out));
    return some ? cstr(out) : NULL;
}

const char *sluice_balancer_pick_with_key(const char *pool, const char *key) {
    return sluice_balancer_pick(pool, SLUICE_ALG_POOL, key ? key : "", key ? strlen(key) : 0);
}

size_t sluice_balancer_endpoints(const char *pool, const sluice_pool_endpoint **endpoints) {
    wstr p = wstr_of(pool);
    sluice_policy_balancer_list_endpoint_t l;
    IMPORT(sluice_policy_balancer_endpoints(&p, &l));
    sluice_pool_endpoint *e = (sluice_pool_endpoint *)l.ptr;
    for (size_t i = 0; i < l.len; i++)
        if (!e[i].addr.len) e[i].addr.ptr = "";
    if (endpoints) *endpoints = e;
    return l.len;
}

sluice_health sluice_health_status(const char *pool, const char *addr) {
    wstr p = wstr_of(pool), a = wstr_of(addr);
    sluice_policy_health_state_t s;
    bool some;
    IMPORT(some = sluice_policy_health_status(&p, &a, &s));
    return some ? (sluice_health)s : SLUICE_HEALTH_UNKNOWN;
}

bool sluice_cache_peek(const void *key, size_t len, sluice_cache_entry *entry) {
    wbytes k = {(uint8_t *)key, len};
    sluice_policy_cache_entry_t e;
    bool some;
    IMPORT(some = sluice_policy_cache_peek(&k, &e));
    if (some && entry) {
        memcpy(entry, &e, sizeof e);
        fix_strs((sluice_str *)entry->tags, entry->tags_len);
    }
    return some;
}

uint64_t sluice_cache_purge_key(const void *key, size_t len, bool soft) {
    wbytes k = {(uint8_t *)key, len};
    return sluice_policy_cache_purge_key(&k, soft);
}

uint64_t sluice_cache_purge_tag(const char *tag, bool soft) {
    wstr t = wstr_of(tag);
    return sluice_policy_cache_purge_tag(&t, soft);
}

static void vlog(sluice_log_level level, const char *fmt, va_list ap) {
    wstr m = wstr_of(strchr(fmt, '%') ? vformat(fmt, ap) : fmt);
    sluice_policy_log_log((sluice_policy_log_level_t)level, &m);
}

void sluice_log(sluice_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void sluice_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(SLUICE_LOG_ERROR, fmt, ap);
    va_end(ap);
    __builtin_trap();
}

/* ================================================================== exports */

void EXPORT_DECIDE(sluice_policy_types_decision_t *ret) {
    call_begin();
    sluice_decision *d = sluice_decide();
    if (!d) d = sluice_forward_default();
    *ret = d->raw;
}

/* Overrides the bindings' weak post-return (which would free() arena memory). */
__attribute__((__export_name__("cabi_post_decide")))
void POST_DECIDE(uint8_t *arg0) {
    (void)arg0;
    arena_reset();
}

#ifdef SLUICE_RESPONDER

struct sluice_response_decision {
    sluice_policy_types_response_decision_t raw;
    size_t cap_edits, cap_tags, cap_hdrs;
};

#define IS_SERVE(r) ((r)->raw.tag == SLUICE_POLICY_TYPES_RESPONSE_DECISION_SERVE)
#define SERVE(r) ((r)->raw.val.serve)

uint16_t sluice_response_status(void) {
    if (!cur.has_status) {
        cur.status = sluice_policy_response_status();
        cur.has_status = 1;
    }
    return cur.status;
}

const char *sluice_response_header(const char *name) {
    wstr n = wstr_of(name);
    wbytes v;
    bool some;
    IMPORT(some = sluice_policy_response_header(&n, &v));
    return some ? (v.len ? (const char *)v.ptr : "") : NULL;
}

size_t sluice_response_header_all(const char *name, const sluice_str **values) {
    wstr n = wstr_of(name);
    W(list_list_u8_t) l;
    IMPORT(sluice_policy_response_header_all(&n, &l));
    fix_strs((sluice_str *)l.ptr, l.len);
    if (values) *values = (const sluice_str *)l.ptr;
    return l.len;
}

size_t sluice_response_headers(const sluice_field **headers) {
    sluice_policy_response_list_field_t l;
    IMPORT(sluice_policy_response_headers(&l));
    fix_headers((sluice_field *)l.ptr, l.len);
    if (headers) *headers = (const sluice_field *)l.ptr;
    return l.len;
}

sluice_source sluice_response_source(void) {
    return sluice_policy_response_source() == SLUICE_POLICY_RESPONSE_RESPONSE_SOURCE_CACHE
               ? SLUICE_FROM_CACHE
               : SLUICE_FROM_UPSTREAM;
}

const char *sluice_response_endpoint(void) { return fetch_opt(sluice_policy_response_endpoint); }

sluice_response_decision *sluice_serve(void) {
    sluice_response_decision *r = arena_alloc(sizeof *r, 8);
    memset(r, 0, sizeof *r);
    r->raw.tag = SLUICE_POLICY_TYPES_RESPONSE_DECISION_SERVE;
    return r;
}

sluice_response_decision *sluice_serve_local(uint16_t status, const void *body, size_t len) {
    sluice_response_decision *r = arena_alloc(sizeof *r, 8);
    memset(r, 0, sizeof *r);
    r->raw.tag = SLUICE_POLICY_TYPES_RESPONSE_DECISION_RESPOND;
    r->raw.val.respond.status = status;
    r->raw.val.respond.body = bcopy_(body, len);
    return r;
}

sluice_response_decision *sluice_serve_local_str(uint16_t status, const char *body) {
    return sluice_serve_local(status, body, body ? strlen(body) : 0);
}

static sluice_response_decision *serve_edit(sluice_response_decision *r, uint8_t op, const char *name, const char *value) {
    if (IS_SERVE(r)) push_edit(&SERVE(r).edits, &r->cap_edits, op, name, value);
    return r;
}

sluice_response_decision *sluice_serve_set_header(sluice_response_decision *r, const char *name, const char *value) {
    return serve_edit(r, SLUICE_POLICY_TYPES_EDIT_OP_SET, name, value);
}
sluice_response_decision *sluice_serve_append_header(sluice_response_decision *r, const char *name, const char *value) {
    return serve_edit(r, SLUICE_POLICY_TYPES_EDIT_OP_APPEND, name, value);
}
sluice_response_decision *sluice_serve_remove_header(sluice_response_decision *r, const char *name) {
    return serve_edit(r, SLUICE_POLICY_TYPES_EDIT_OP_REMOVE, name, NULL);
}

sluice_response_decision *sluice_serve_ttl(sluice_response_decision *r, uint32_t secs) {
    if (IS_SERVE(r)) {
        SERVE(r).ttl_secs.is_some = true;
        SERVE(r).ttl_secs.val = secs;
    }
    return r;
}

sluice_response_decision *sluice_serve_cache_tag(sluice_response_decision *r, const char *tag) {
    if (IS_SERVE(r)) *LIST_PUSH(SERVE(r).tags, &r->cap_tags) = wcopy(tag);
    return r;
}

sluice_response_decision *sluice_serve_no_store(sluice_response_decision *r) {
    if (IS_SERVE(r)) SERVE(r).no_store = true;
    return r;
}

sluice_response_decision *sluice_serve_header(sluice_response_decision *r, const char *name, const char *value) {
    if (!IS_SERVE(r)) {
        wheader *h = LIST_PUSH(r->raw.val.respond.headers, &r->cap_hdrs);
        size_t nl = strlen(name), vl = value ? strlen(value) : 0;
        h->name.ptr = (uint8_t *)copy_lower(name, nl);
        h->name.len = nl;
        h->value = bcopy_(value, vl);
    }
    return r;
}

void exports_responder_on_response(sluice_policy_types_response_decision_t *ret) {
    call_begin();
    sluice_response_decision *r = sluice_on_response();
    if (!r) r = sluice_serve();
    *ret = r->raw;
}

__attribute__((__export_name__("cabi_post_on-response")))
void __wasm_export_exports_responder_on_response_post_return(uint8_t *arg0) {
    (void)arg0;
    arena_reset();
}

#else /* the policy world has no response phase: these trap if called */

uint16_t sluice_response_status(void) { sluice_fail("sluice_response_status: no response phase in this policy"); }
const char *sluice_response_header(const char *n) { (void)n; sluice_fail("sluice_response_header: no response phase in this policy"); }
size_t sluice_response_header_all(const char *n, const sluice_str **v) { (void)n; (void)v; sluice_fail("sluice_response_header_all: no response phase in this policy"); }
size_t sluice_response_headers(const sluice_field **h) { (void)h; sluice_fail("sluice_response_headers: no response phase in this policy"); }
sluice_source sluice_response_source(void) { sluice_fail("sluice_response_source: no response phase in this policy"); }
const char *sluice_response_endpoint(void) { sluice_fail("sluice_response_endpoint: no response phase in this policy"); }

#endif
