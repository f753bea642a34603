/* Routes by path prefix: /api/ to the API pool (never cached), /static/ to the static pool
 * (cached for a day), everything else to the default pool. The C twin of
 * examples/path-routing (Rust): the same request gets the same decision.
 *
 * Settings: api_pool (default "api"), static_pool (default "static"). */
#include <string.h>

#include "sluice.h"

/* One day, in seconds. */
#define STATIC_TTL 86400

static int starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

sluice_decision *sluice_decide(void) {
    const char *path = sluice_request_path();
    if (starts_with(path, "/api/"))
        return sluice_no_cache(sluice_forward(sluice_config_get_or("api_pool", "api")));
    if (starts_with(path, "/static/"))
        return sluice_ttl(sluice_forward(sluice_config_get_or("static_pool", "static")), STATIC_TTL);
    return sluice_forward_default();
}
