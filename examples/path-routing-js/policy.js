// @ts-check
// Routes by path prefix: /api/ to the API pool (never cached), /static/ to the static pool
// (cached for a day), everything else to the default pool. The JavaScript twin of
// examples/path-routing (Rust): the same request gets the same decision.
//
// Settings: `api_pool` (default `api`), `static_pool` (default `static`).

import { forward, forwardDefault, config } from "sluice";

/** One day, in seconds. */
const STATIC_TTL = 86_400;

/** @param {import("sluice").Request} req */
export function decide(req) {
  const path = req.path;
  if (path.startsWith("/api/")) {
    return forward(config.getOr("api_pool", "api")).noCache();
  } else if (path.startsWith("/static/")) {
    return forward(config.getOr("static_pool", "static")).ttl(STATIC_TTL);
  } else {
    return forwardDefault();
  }
}
