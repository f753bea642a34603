/* Error pages and response hygiene, with the response phase (world `responder`).
 *
 * decide:      forwards to pool `pool` (setting; the default pool when unset).
 * on-response: - an upstream 5xx is replaced by a branded HTML page with the same status
 *                (`cache-control: no-store`, `x-error-page: 1`), so backends' stack traces
 *                and default error pages never reach clients;
 *              - every other response gets `x-frame-options: DENY` and
 *                `x-content-type-options: nosniff`, and loses `server`;
 *              - a response marked `x-private: 1` by the backend is served but not stored
 *                in the cache, and the marker is removed.
 *
 * Settings: pool (default: the default pool), site (default "this site"): the name on the
 * error page. */
#include <string.h>

#include "sluice.h"

sluice_decision *sluice_decide(void) {
    return sluice_forward(sluice_config_get("pool")); /* NULL (unset): the default pool */
}

static const char *reason(unsigned status) {
    switch (status) {
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Server Error";
    }
}

sluice_response_decision *sluice_on_response(void) {
    unsigned status = sluice_response_status();
    if (status >= 500 && status <= 599 && sluice_response_source() == SLUICE_FROM_UPSTREAM) {
        const char *site = sluice_config_get_or("site", "this site");
        const char *page = sluice_format(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%u %s</title></head>\n"
            "<body><h1>%s is having trouble</h1><p>%u %s. Please try again in a minute.</p>"
            "</body></html>\n",
            status, reason(status), site, status, reason(status));
        sluice_response_decision *r = sluice_serve_local_str((uint16_t)status, page);
        sluice_serve_header(r, "content-type", "text/html; charset=utf-8");
        sluice_serve_header(r, "cache-control", "no-store");
        sluice_serve_header(r, "x-error-page", "1");
        return r;
    }
    sluice_response_decision *r = sluice_serve();
    sluice_serve_set_header(r, "x-frame-options", "DENY");
    sluice_serve_set_header(r, "x-content-type-options", "nosniff");
    sluice_serve_remove_header(r, "server");
    const char *priv = sluice_response_header("x-private");
    if (priv && strcmp(priv, "1") == 0) {
        sluice_serve_no_store(r);
        sluice_serve_remove_header(r, "x-private");
    }
    return r;
}
