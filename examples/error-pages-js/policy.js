// @ts-check
// A response phase in JavaScript: friendly error pages, a header on every response, and no
// caching of responses the upstream marks private.
//
// decide: everything goes to the default pool.
// onResponse (called with every response head to a forwarded request, from the upstream or
// the cache, before it is served):
// - A 5xx is replaced by a local `503 Service Unavailable` page with `retry-after: 30`: JSON
//   for clients that accept `application/json`, HTML otherwise (the upstream's body is
//   discarded; the page names the upstream's status).
// - Every other response gets `x-served-by: <served_by>` and loses `server`.
// - A response with `x-private: 1` is served but not stored (`noStore`), gets
//   `cache-control: private, no-store`, and loses `x-private`.
//
// Settings: `served_by` (default `sluice`).

import { forwardDefault, respond, serve, config } from "sluice";

/** @param {import("sluice").Request} _req */
export function decide(_req) {
  return forwardDefault();
}

/**
 * @param {import("sluice").Request} req
 * @param {import("sluice").Response} resp
 */
export function onResponse(req, resp) {
  const status = resp.status;
  if (status >= 500) {
    if ((req.header("accept") ?? "").includes("application/json")) {
      return respond(503, `{"error":"upstream unavailable","status":${status}}\n`)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header("retry-after", "30");
    }
    return respond(503, errorPage(status))
      .header("content-type", "text/html; charset=utf-8")
      .header("cache-control", "no-store")
      .header("retry-after", "30");
  }
  const out = serve()
    .setHeader("x-served-by", config.getOr("served_by", "sluice"))
    .removeHeader("server");
  if (resp.header("x-private") === "1") {
    out.noStore().setHeader("cache-control", "private, no-store").removeHeader("x-private");
  }
  return out;
}

/** @param {number} status */
function errorPage(status) {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Temporarily unavailable</title></head>
<body>
<h1>We'll be right back</h1>
<p>The service is having trouble (error ${status}). Please try again in a minute.</p>
</body>
</html>
`;
}
