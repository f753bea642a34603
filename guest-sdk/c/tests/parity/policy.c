#include <string.h>
#include "sluice.h"

static const char *opt(const char *v) { return v ? sluice_format("[%s]", v) : "<none>"; }

sluice_decision *sluice_decide(void) {
    const char *path = sluice_request_path();
    if (!strcmp(path, "/local")) {
        sluice_decision *d = sluice_respond_str(503, "down");
        sluice_header(d, "Retry-After", "1");
        sluice_header(d, "x-a", "1");
        sluice_append_response_header(d, "x-a", "2");
        sluice_set_response_header(d, "retry-after", "120");
        sluice_remove_response_header(d, "x-gone");
        sluice_ttl(d, 5);
        sluice_algorithm(d, SLUICE_ALG_RANDOM);
        return sluice_set_request_header(d, "x-ignored", "1");
    }
    if (!strcmp(path, "/local2"))
        return sluice_remove_response_header(sluice_header(sluice_respond(200, NULL, 0), "x-a", "1"), "X-A");
    if (!strcmp(path, "/full")) {
        sluice_decision *d = sluice_forward("api");
        sluice_endpoint(d, "10.0.0.1:80");
        sluice_algorithm(d, SLUICE_ALG_MAGLEV);
        sluice_hash_key_str(d, "k");
        sluice_cache_key(d, "key", 3);
        sluice_ttl(d, 60);
        sluice_no_cache(d);
        sluice_cache_tag(d, "a");
        sluice_cache_tag(d, "b");
        sluice_set_request_header(d, "X-A", "1");
        sluice_append_request_header(d, "x-b", "2");
        sluice_remove_request_header(d, "x-c");
        sluice_set_response_header(d, "x-d", "4");
        sluice_header(d, "x-e", "5");
        return sluice_rewrite(d, "/new?q");
    }
    if (!strcmp(path, "/config")) {
        const char *b = sluice_config_get("flag") ? (sluice_config_get_bool("flag", false) ? "true" : "false") : "unset";
        const char *n = sluice_config_get("n") ? sluice_format("%lld", sluice_config_get_int("n", 0)) : "unset";
        const char *alg = sluice_algorithm_name(sluice_algorithm_parse(sluice_config_get("alg")));
        sluice_decision *d = sluice_forward_default();
        sluice_header(d, "x-bool", b);
        sluice_header(d, "x-n", n);
        sluice_header(d, "x-alg", alg ? alg : "pool");
        sluice_header(d, "x-get", opt(sluice_config_get("s")));
        return sluice_header(d, "x-get-or", sluice_config_get_or("s", "dflt"));
    }
    const sluice_param *params;
    size_t np = sluice_request_query_params(&params);
    const char *pj = "";
    for (size_t i = 0; i < np; i++)
        pj = sluice_format("%s%s%s=%s", pj, i ? "|" : "", params[i].name, params[i].value);
    sluice_decision *d = sluice_forward_default();
    sluice_header(d, "x-method", sluice_request_method());
    sluice_header(d, "x-scheme", sluice_request_scheme());
    sluice_header(d, "x-authority", sluice_request_authority());
    sluice_header(d, "x-host", sluice_request_host());
    sluice_header(d, "x-path", sluice_request_path());
    sluice_header(d, "x-query", opt(sluice_request_query()));
    sluice_header(d, "x-params", pj);
    sluice_header(d, "x-sorted", opt(sluice_request_sorted_query()));
    sluice_header(d, "x-key", sluice_request_default_cache_key());
    sluice_header(d, "x-client", sluice_request_client_ip());
    sluice_header(d, "x-sni", opt(sluice_request_tls_sni()));
    sluice_header(d, "x-version", sluice_request_http_version());
    sluice_header(d, "x-nheaders", sluice_format("%zu", sluice_request_headers(NULL)));
    const char *qn[] = {"a", "b", "", "x", "A"};
    for (int i = 0; i < 5; i++)
        sluice_header(d, sluice_format("x-qp-%zu", strlen(qn[i])), opt(sluice_request_query_param(qn[i])));
    const char *cn[] = {"a", "ab", "c", "d", "", "e f"};
    for (int i = 0; i < 6; i++) sluice_header(d, "x-cookie", opt(sluice_request_cookie(cn[i])));
    const char *h = sluice_request_header("x-a");
    sluice_header(d, "x-hdr", h ? h : "<none>");
    const sluice_str *all;
    size_t n = sluice_request_header_all("x-a", &all);
    sluice_header(d, "x-hdr-n", sluice_format("%zu", n));
    for (size_t i = 0; i < n; i++) sluice_header(d, "x-hdr-all", all[i].ptr);
    return d;
}

sluice_response_decision *sluice_on_response(void) {
    if (sluice_response_status() >= 500) {
        sluice_response_decision *r = sluice_serve_local_str(503, "<h1>Back soon</h1>");
        sluice_serve_header(r, "Content-Type", "text/html");
        sluice_serve_set_header(r, "x-ignored", "1");
        return sluice_serve_no_store(r);
    }
    sluice_response_decision *r = sluice_serve();
    sluice_serve_set_header(r, "X-Frame-Options", "DENY");
    sluice_serve_append_header(r, "x-b", "1");
    sluice_serve_remove_header(r, "Server");
    sluice_serve_header(r, "x-ignored", "1");
    if (sluice_response_source() == SLUICE_FROM_CACHE) {
        sluice_serve_cache_tag(r, "cached");
    } else {
        sluice_serve_no_store(sluice_serve_cache_tag(sluice_serve_cache_tag(sluice_serve_ttl(r, 30), "fresh"), "two"));
    }
    sluice_serve_set_header(r, "x-status", sluice_format("%u", sluice_response_status()));
    sluice_serve_set_header(r, "x-ep", opt(sluice_response_endpoint()));
    sluice_serve_set_header(r, "x-nh", sluice_format("%zu", sluice_response_headers(NULL)));
    const char *rh = sluice_response_header("x-r");
    sluice_serve_set_header(r, "x-rh", rh ? rh : "");
    sluice_serve_set_header(r, "x-rn", sluice_format("%zu", sluice_response_header_all("x-r", NULL)));
    return sluice_serve_set_header(r, "x-path", sluice_request_path());
}
