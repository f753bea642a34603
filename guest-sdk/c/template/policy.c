/* A sluice policy in C: forwards every request to the default pool and adds a response
 * header. Build: sluice policy build .   Try: sluice policy test build/policy.wasm
 * --request 'GET https://example.com/'. The API is in sluice.h (guest-sdk/c/README.md). */
#include "sluice.h"

sluice_decision *sluice_decide(void) {
    sluice_decision *d = sluice_forward_default();
    sluice_set_response_header(d, "x-policy", "c");
    return d;
}
