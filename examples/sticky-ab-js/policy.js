// @ts-check
// Keeps each visitor on one endpoint of the `ab` pool, for A/B tests run across endpoints.
// The JavaScript twin of examples/sticky-ab (Rust): the same request gets the same decision.
//
// The cookie `ab` is the hash key, so one cookie value always lands on the same endpoint
// while the pool is unchanged. A visitor without the cookie gets an id derived from client IP
// and `user-agent` (so their next requests agree even before the cookie comes back), which is
// used as the hash key and set as the cookie:
// `set-cookie: ab=<id>; Path=/; HttpOnly; SameSite=Lax`.
//
// Settings: `pool` (default `ab`).

import { forward, config, encodeUtf8 } from "sluice";

/** @param {import("sluice").Request} req */
export function decide(req) {
  const pool = config.getOr("pool", "ab");
  const id = req.cookie("ab");
  if (id !== undefined && id !== "") {
    return forward(pool).hashKey(id);
  }
  const visitor = visitorId(req);
  return forward(pool)
    .hashKey(visitor)
    .appendResponseHeader("set-cookie", `ab=${visitor}; Path=/; HttpOnly; SameSite=Lax`);
}

/**
 * 16 hex digits of a hash of client IP and user agent.
 * @param {import("sluice").Request} req
 */
function visitorId(req) {
  const ip = encodeUtf8(req.clientIp + "\n");
  const ua = req.headerBytes("user-agent") ?? new Uint8Array(0);
  const seed = new Uint8Array(ip.length + ua.length);
  seed.set(ip, 0);
  seed.set(ua, ip.length);
  return fnv1a64(seed).toString(16).padStart(16, "0");
}

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;

/**
 * 64-bit FNV-1a (Fowler, Noll, Vo; draft-eastlake-fnv), exact with BigInt. Stable, not
 * secret: the id only spreads visitors.
 * @param {Uint8Array} bytes
 * @returns {bigint}
 */
export function fnv1a64(bytes) {
  let hash = FNV_OFFSET;
  for (const b of bytes) {
    hash = BigInt.asUintN(64, (hash ^ BigInt(b)) * FNV_PRIME);
  }
  return hash;
}
