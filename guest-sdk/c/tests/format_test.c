/* Native unit test of the SDK's printf (sluice_format) against libc's snprintf, and of its
 * UTF-8 check against a straightforward reference decoder. Development only:
 *
 *   wit-bindgen c --world policy wit --out-dir /tmp/sluice-c-bindings    # 0.63.0
 *   clang -O1 -w -I /tmp/sluice-c-bindings guest-sdk/c/tests/format_test.c \
 *       -o /tmp/format_test -lm -no-pie \
 *       -Wl,--unresolved-symbols=ignore-all && /tmp/format_test
 *
 * (The host imports are never called; the linker is told to leave them unresolved.) */
#include "../sluice.c"

#include <math.h>
#include <stdio.h>

sluice_decision *sluice_decide(void) { return 0; }

static int fails, total;

#define T(...)                                                                          \
    do {                                                                                \
        char want[1024];                                                                \
        snprintf(want, sizeof want, __VA_ARGS__);                                       \
        const char *got = sluice_format(__VA_ARGS__);                                   \
        total++;                                                                        \
        if (strcmp(want, got)) {                                                        \
            fails++;                                                                    \
            printf("FAIL %s: want [%s] got [%s]\n", #__VA_ARGS__, want, got);           \
        }                                                                               \
    } while (0)

static void fixed(void) {
    T("plain"); T(""); T("%%"); T("a%%b%s", "x");
    T("%d %i %u", 0, -5, 7u); T("%5d|%-5d|%05d", 42, 42, 42); T("%+d % d %+d", 3, 3, -3);
    T("%.3d|%.0d|%5.3d|%-8.4d|", 7, 0, -7, 12); T("%x %X %#x %#X %#x", 255, 255, 255, 255, 0);
    T("%o %#o %#o %.3o", 8, 8, 0, 8);
    T("%lld %llu %lx", -9223372036854775807LL - 1, 18446744073709551615ULL, 0xdeadbeefUL);
    T("%zu %zd", (size_t)123, (ssize_t)-4); T("%hhd %hd %hhu", 300, 70000, 300);
    T("%s|%10s|%-10s|%.2s|%5.1s|", "abc", "abc", "abc", "abc", "abc"); T("%c%c%5c", 'a', 'b', 'c');
    T("%*d|%-*d|%.*d|%*.*s|", 6, 1, 6, 1, 3, 1, 6, 2, "xyz"); T("%*d", -6, 1);
    T("%016llx", 0x85565562861cb8c5ULL); T("%08.3d", 5); T("%-08d|", 5); T("%p", (void *)0x1234);
    T("%f %f %f", 0.0, 1.5, -2.25); T("%.2f %.0f %10.3f %-10.1f|", 3.14159, 2.5, 1.0005, 9.99);
    T("%.3f", 123456.789); T("%f", 1e15); T("%.1f", 0.05); T("%+.2f % .2f", 1.0, 1.0);
    T("%08.2f", -3.5); T("%.2f %.2f %.1f %.0f %.0f %.3f", 0.125, 0.375, 0.25, 0.5, 1.5, 2.0005);
    T("%.1f %.1f %.1f %.2f %.0f %.0f", 0.15, 0.25, 0.35, 1.005, 3.5, 4.5); T("%.0f", 1e19);
    T("%5s%5s", "", "x"); T("%.0s|", "abc"); T("%u", 4294967295u); T("%d", -2147483647 - 1);
    T("%lu", 0UL); T("%#.0o", 0); T("%.0x|%#.0x|", 0, 0);
}

static void fuzz(void) {
    const char *flags[] = {"", "-", "0", "+", " ", "#", "-+", "0+", "#0", "- "};
    const char convs[] = "diuoxXfs";
    srand(1);
    for (int i = 0; i < 200000; i++) {
        char fmt[64], ws[8] = "", ps[8] = "", want[512];
        char c = convs[rand() % 8];
        int w = rand() % 3 ? -1 : rand() % 25, p = rand() % 3 ? -1 : rand() % 12;
        if (w >= 0) snprintf(ws, sizeof ws, "%d", w);
        if (p >= 0) snprintf(ps, sizeof ps, ".%d", p);
        const char *fl = flags[rand() % 10];
        if (c == 's') fl = rand() % 2 ? "-" : "";
        snprintf(fmt, sizeof fmt, "%%%s%s%s%s%c", fl, ws, ps, (c == 'f' || c == 's') ? "" : "ll", c);
        const char *got;
        if (c == 'f') {
            double v;
            switch (rand() % 4) {
            case 0: v = (rand() - RAND_MAX / 2) / 1000.0; break;
            case 1: v = (double)rand() / RAND_MAX; break;
            case 2: v = (rand() % 2000 - 1000) / 8.0; break;
            default: v = ldexp((double)rand(), rand() % 60 - 30); break;
            }
            snprintf(want, sizeof want, fmt, v);
            got = sluice_format(fmt, v);
        } else if (c == 's') {
            const char *s = (const char *[]){"", "a", "hello", "sluice policy"}[rand() % 4];
            snprintf(want, sizeof want, fmt, s);
            got = sluice_format(fmt, s);
        } else {
            long long v = rand() % 3 == 0 ? 0 : ((long long)rand() << 33) ^ rand();
            if (rand() % 2) v = -v;
            if (rand() % 4 == 0) v = rand() % 20;
            snprintf(want, sizeof want, fmt, v);
            got = sluice_format(fmt, v);
        }
        total++;
        if (strcmp(want, got) && fails++ < 20) printf("FAIL %s: want [%s] got [%s]\n", fmt, want, got);
        if (i % 1000 == 0) arena_reset();
    }
}

/* Reference: decode scalar by scalar, rejecting overlongs, surrogates and > U+10FFFF. */
static bool ref_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], need, cp, min;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xE0) == 0xC0) { need = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { need = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { need = 3; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (i + need >= n) return false;
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += need + 1;
    }
    return true;
}

static void utf8(void) {
    static const unsigned char pool[] = {0x41, 0x20, 0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xed,
                                         0xee, 0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff, 0xa0, 0x9f, 0x90, 0x8f};
    srand(2);
    for (int i = 0; i < 200000; i++) {
        unsigned char b[8];
        size_t n = (size_t)(rand() % 7);
        for (size_t k = 0; k < n; k++) b[k] = rand() % 5 ? pool[rand() % sizeof pool] : (unsigned char)rand();
        total++;
        if (utf8_valid(b, n) != ref_utf8(b, n) && fails++ < 20) printf("FAIL utf8 len %zu\n", n);
    }
}

int main(void) {
    fixed();
    fuzz();
    utf8();
    printf("%d passed, %d failed\n", total - fails, fails);
    return fails != 0;
}
