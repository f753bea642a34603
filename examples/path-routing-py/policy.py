"""Routes by path prefix: /api/ to the API pool (never cached), /static/ to the static pool
(cached for a day), everything else to the default pool. The Python twin of
examples/path-routing (Rust): the same request gets the same decision.

Settings: ``api_pool`` (default ``api``), ``static_pool`` (default ``static``).
"""

from sluice import config, forward, forward_default

# One day, in seconds.
STATIC_TTL = 86_400


def decide(req):
    path = req.path
    if path.startswith("/api/"):
        return forward(config.get_or("api_pool", "api")).no_cache()
    if path.startswith("/static/"):
        return forward(config.get_or("static_pool", "static")).ttl(STATIC_TTL)
    return forward_default()
