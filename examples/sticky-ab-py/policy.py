"""Keeps each visitor on one endpoint of the ``ab`` pool, for A/B tests run across endpoints.
The Python twin of examples/sticky-ab (Rust): the same request gets the same decision.

The cookie ``ab`` is the hash key. A visitor without it gets an id derived from client IP and
``user-agent`` (16 hex digits of FNV-1a-64), used as the hash key and set as the cookie:
``set-cookie: ab=<id>; Path=/; HttpOnly; SameSite=Lax``.

Settings: ``pool`` (default ``ab``).
"""

from sluice import config, forward

_MASK = (1 << 64) - 1


def fnv1a_64(data):
    """64-bit FNV-1a (Fowler, Noll, Vo; draft-eastlake-fnv)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & _MASK
    return h


def visitor_id(req):
    seed = req.client_ip.encode() + b"\n" + (req.header_bytes("user-agent") or b"")
    return f"{fnv1a_64(seed):016x}"


def decide(req):
    pool = config.get_or("pool", "ab")
    cookie = req.cookie("ab")
    if cookie:
        return forward(pool).hash_key(cookie)
    vid = visitor_id(req)
    return (
        forward(pool)
        .hash_key(vid)
        .append_response_header("set-cookie", f"ab={vid}; Path=/; HttpOnly; SameSite=Lax")
    )
