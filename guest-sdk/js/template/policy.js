// @ts-check
// A sluice routing policy. `decide(req)` runs for every request and returns what to do with it.
// Build: sluice policy build .      Try: sluice policy test build/policy.wasm --request 'GET https://example.com/'
// The SDK ("sluice"): forward(pool), forwardDefault(), respond(status, body) and their builder
// methods; req.path, req.method, req.header(name), req.cookie(name), req.clientIp, ...;
// config, log, balancer, health, cache. Types: sluice.d.ts.

import { forwardDefault } from "sluice";

/** @param {import("sluice").Request} req */
export function decide(req) {
  if (req.path.startsWith("/admin/")) {
    return forwardDefault().noCache();
  }
  return forwardDefault().setResponseHeader("x-policy", "my-policy");
}

// Optional: a response phase. Export it and the host calls it with every response head
// (from the upstream or the cache) before it is served.
//
// import { serve, respond } from "sluice";
// /** @param {import("sluice").Request} req @param {import("sluice").Response} resp */
// export function onResponse(req, resp) {
//   if (resp.status >= 500) return respond(503, "back soon\n").header("content-type", "text/plain");
//   return serve().setHeader("x-served-by", "sluice");
// }
