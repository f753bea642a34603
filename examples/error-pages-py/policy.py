"""Error pages and response hygiene, with the response phase (world ``responder``).

decide: everything goes to the default pool.
on_response (every response head to a forwarded request, from the upstream or the cache):
- an upstream 5xx is replaced by a page of our own with the same status
  (``cache-control: no-store``), so backends' error pages never reach clients;
- every other response gets ``x-frame-options: DENY`` and loses ``server``;
- a response marked ``x-private: 1`` is served but not stored, and the marker is removed.

Settings: ``site`` (default ``this site``): the name on the error page.
"""

from sluice import config, forward_default, respond, serve

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{status}</title></head>
<body><h1>{site} is having trouble</h1><p>Error {status}. Please try again in a minute.</p>
</body></html>
"""


def decide(req):
    return forward_default()


def on_response(req, resp):
    status = resp.status
    if status >= 500 and resp.source == "upstream":
        page = PAGE.format(status=status, site=config.get_or("site", "this site"))
        return (
            respond(status, page)
            .header("content-type", "text/html; charset=utf-8")
            .header("cache-control", "no-store")
        )
    out = serve().set_header("x-frame-options", "DENY").remove_header("server")
    if resp.header("x-private") == "1":
        out.no_store().remove_header("x-private")
    return out
