"""sluice SDK for Python policies (WIT package sluice:policy@0.3.0).

A policy is a module ``policy.py`` defining ``decide(req)`` (and optionally
``on_response(req, resp)``)::

    from sluice import forward, forward_default, respond, config

    def decide(req):
        if req.path.startswith("/api/"):
            return forward(config.get_or("api_pool", "api")).no_cache()
        return forward_default()

``build.sh`` wraps it in an entry module for componentize-py, which imports everything at
build time (the interpreter's heap is snapshotted into the component), so a request pays only
for the code it runs.

This module mirrors the Rust SDK (guest-sdk/src): the same request gives the same decision in
every language, so string handling follows Rust where it matters (cookie parsing, query
sorting by UTF-8 byte order, ASCII-only lower-casing, Rust's idea of whitespace).

Everything that reads the request, the response or the host (``config``, ``log``,
``balancer``, ``health``, ``cache``) works only inside ``decide``/``on_response``: called at
import time it fails the build.
"""

from wit_world.imports import types as _t
from wit_world.imports import request as _rq
from wit_world.imports import config as _cfg
from wit_world.imports import log as _log
from wit_world.imports import balancer as _bal
from wit_world.imports import health as _hl
from wit_world.imports import cache as _ch

try:  # only in the `responder` world (a policy that defines on_response)
    from wit_world.imports import response as _rs
except ImportError:  # pragma: no cover - depends on the world built for
    _rs = None

__all__ = [
    "VERSION", "Request", "Response", "Header", "Decision", "ResponseDecision",
    "forward", "forward_default", "respond", "serve", "Algorithm", "parse_algorithm",
    "SettingError", "config", "log", "balancer", "health", "cache", "Endpoint", "CacheEntry",
]

#: The SDK version; builds components for ``sluice:policy@0.3.0``.
VERSION = "0.3.0"

# ----------------------------------------------------------------------------------------------
# Bytes and text

_EMPTY = b""

# Rust's `char::is_whitespace` (Unicode White_Space). Python's str.strip() also strips
# U+001C..U+001F, which Rust does not: always pass this set explicitly.
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
      "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_SP_TAB = " \t"
_DIGITS = frozenset("0123456789")


def _bytes(v, what):
    """A header value, key or body: str (sent as UTF-8) or bytes-like."""
    t = type(v)
    if t is bytes:
        return v
    if t is str:
        return v.encode()
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return str(v).encode()
    raise TypeError(f"{what}: expected str or bytes, got {type(v).__name__}")


def _text(v, what):
    if type(v) is str:
        return v
    if isinstance(v, str):
        return str(v)
    raise TypeError(f"{what}: expected str, got {type(v).__name__}")


def _ascii_lower(s):
    """ASCII-only lower-casing, like Rust's `to_ascii_lowercase` (str.lower() is Unicode)."""
    if s.isascii():
        return s.lower()
    return s.encode().lower().decode()


def _utf8(b):
    """`str::from_utf8`: the text, or None when not valid UTF-8."""
    try:
        return b.decode()
    except UnicodeDecodeError:
        return None


def _lossy(b):
    """`String::from_utf8_lossy`."""
    return b.decode(errors="replace")


def _u32(v, what):
    if type(v) is not int or v < 0 or v > 0xFFFFFFFF:
        raise ValueError(f"{what}: expected an integer 0..4294967295, got {v!r}")
    return v


def _u16(v, what):
    if type(v) is not int or v < 0 or v > 0xFFFF:
        raise ValueError(f"{what}: expected an integer 0..65535, got {v!r}")
    return v


# ----------------------------------------------------------------------------------------------
# Request helpers (pure; the algorithms of guest-sdk/src/request.rs)

def _host_of(authority):
    """`authority` without its port; IPv6 literals keep their brackets."""
    if authority.startswith("["):
        end = authority.find("]")
        return authority if end < 0 else authority[:end + 1]
    colon = authority.rfind(":")
    if colon < 0:
        return authority
    for c in authority[colon + 1:]:
        if c not in _DIGITS:
            return authority
    return authority[:colon]


def _sorted_pairs(query):
    """The non-empty `&`-separated pairs as (name, value, raw), sorted by name then value.

    Python compares str by code point, which is UTF-8 byte order (Rust's); sort is stable.
    """
    pairs = []
    for pair in query.split("&"):
        if not pair:
            continue
        name, eq, value = pair.partition("=")
        pairs.append((name, value, pair))
    pairs.sort(key=lambda p: (p[0], p[1]))
    return pairs


def _sorted_query(query):
    return "&".join(p[2] for p in _sorted_pairs(query))


def _query_param(query, name):
    for pair in query.split("&"):
        n, eq, value = pair.partition("=")
        if n == name and pair:
            return value
    return None


def _cache_key(scheme, authority, path, query):
    host = _host_of(authority)
    rest = authority[len(host):]
    if rest.startswith(":"):
        port = rest[1:]
    else:
        port = "443" if scheme == "https" else "80"
    key = f"{scheme}://{_ascii_lower(host)}:{port}{path}"
    sorted_q = _sorted_query(query) if query is not None else ""
    if sorted_q:
        key += "?" + sorted_q
    return key


def _cookie_in(line, name):
    """The value of cookie `name` in one `Cookie` field line (RFC 6265 §5.4), as Rust's."""
    text = _utf8(line)
    if text is None:
        return None
    for raw in text.split(";"):
        pair = raw.strip(_SP_TAB)
        n, eq, value = pair.partition("=")
        if not eq:
            continue
        if n.rstrip(_WS) == name:
            return value.lstrip(_WS)
    return None


class Header:
    """One header field: ``name`` (lower case), ``value`` (text; invalid UTF-8 replaced by
    U+FFFD) and ``bytes`` (the value as received)."""

    __slots__ = ("name", "value", "bytes")

    def __init__(self, name, raw):
        self.name = name
        self.bytes = raw
        self.value = _lossy(raw)

    def __repr__(self):
        return f"Header({self.name!r}, {self.value!r})"

    def __eq__(self, other):
        return isinstance(other, Header) and (self.name, self.bytes) == (other.name, other.bytes)


_UNSET = object()


class Request:
    """The request being decided: the context of the current ``decide``/``on_response`` call.

    Every accessor calls into the host and copies only what it returns; ``method``,
    ``scheme``, ``authority``, ``path``, ``query`` and ``client_ip`` are fetched once per call.
    Created by the SDK; do not keep it beyond the call.
    """

    __slots__ = ("_method", "_scheme", "_authority", "_path", "_query", "_client_ip")

    def __init__(self):
        self._method = self._scheme = self._authority = _UNSET
        self._path = self._query = self._client_ip = _UNSET

    @property
    def method(self):
        """The method as received, e.g. ``GET`` (case-sensitive)."""
        m = self._method
        if m is _UNSET:
            m = self._method = _rq.method()
        return m

    @property
    def scheme(self):
        """``http`` or ``https``: whether the client connection was TLS."""
        s = self._scheme
        if s is _UNSET:
            s = self._scheme = _rq.scheme()
        return s

    @property
    def authority(self):
        """``Host``/``:authority``, lower case, with the port when the client sent one."""
        a = self._authority
        if a is _UNSET:
            a = self._authority = _rq.authority()
        return a

    @property
    def host(self):
        """The authority without its port (IPv6 keeps its brackets)."""
        return _host_of(self.authority)

    @property
    def path(self):
        """The path, percent-encoding untouched, starting with ``/`` (or ``*``). No query."""
        p = self._path
        if p is _UNSET:
            p = self._path = _rq.path()
        return p

    @property
    def query(self):
        """The query string without ``?``, or None when the target had none."""
        q = self._query
        if q is _UNSET:
            q = self._query = _rq.query()
        return q

    def query_params(self):
        """The query's (name, value) pairs, raw, sorted by name then value."""
        return [(n, v) for n, v, _ in _sorted_pairs(self.query or "")]

    def query_param(self, name):
        """The raw value of the first query parameter ``name``; ``""`` for ``?name``."""
        q = self.query
        return None if q is None else _query_param(q, name)

    def sorted_query(self):
        """The query re-joined in ``query_params`` order; None when there is no query."""
        q = self.query
        return None if q is None else _sorted_query(q)

    def header(self, name):
        """The first value of header ``name`` (any case) as text; None if absent or not UTF-8."""
        v = _rq.header(name)
        return None if v is None else _utf8(v)

    def header_bytes(self, name):
        """The first value of header ``name`` as bytes; None when absent."""
        return _rq.header(name)

    def header_all(self, name):
        """Every value of header ``name`` in order, as text (U+FFFD for invalid UTF-8)."""
        return [_lossy(v) for v in _rq.header_all(name)]

    def header_all_bytes(self, name):
        """Every value of header ``name`` in order, as bytes."""
        return _rq.header_all(name)

    def headers(self):
        """All header fields in order, as ``Header``s. Prefer ``header`` for one name."""
        return [Header(h.name, h.value) for h in _rq.headers()]

    def cookie(self, name):
        """The value of cookie ``name`` (case-sensitive, first match, as sent), or None."""
        for line in _rq.header_all("cookie"):
            v = _cookie_in(line, name)
            if v is not None:
                return v
        return None

    @property
    def client_ip(self):
        """The client's IP address as text: the peer of the connection."""
        c = self._client_ip
        if c is _UNSET:
            c = self._client_ip = _rq.client_ip()
        return c

    @property
    def tls_sni(self):
        """The TLS server name the client sent, or None."""
        return _rq.tls_sni()

    @property
    def http_version(self):
        """``HTTP/1.0``, ``HTTP/1.1`` or ``HTTP/2``."""
        return _rq.http_version()

    def default_cache_key(self):
        """The host's default cache key: ``scheme://host:port/path?sorted-query``."""
        return _cache_key(self.scheme, self.authority, self.path, self.query)

    def method_path_sorted_query(self):
        """The same string as ``default_cache_key()``, under the design sketch's name."""
        return self.default_cache_key()

    def __repr__(self):
        m = "?" if self._method is _UNSET else self._method
        p = "?" if self._path is _UNSET else self._path
        return f"Request({m} {p})"


_SOURCE_NAMES = {}
if _rs is not None:
    _SOURCE_NAMES = {_rs.ResponseSource.UPSTREAM: "upstream", _rs.ResponseSource.CACHE: "cache"}


class Response:
    """The response head being served: the context of the current ``on_response`` call."""

    __slots__ = ("_status",)

    def __init__(self):
        self._status = _UNSET

    @property
    def status(self):
        """The status code, e.g. 200 or 503."""
        s = self._status
        if s is _UNSET:
            s = self._status = _rs.status()
        return s

    def header(self, name):
        """The first value of header ``name`` as text; None when absent or not UTF-8."""
        v = _rs.header(name)
        return None if v is None else _utf8(v)

    def header_bytes(self, name):
        """The first value of header ``name`` as bytes; None when absent."""
        return _rs.header(name)

    def header_all(self, name):
        """Every value of header ``name``, as text (U+FFFD for invalid UTF-8)."""
        return [_lossy(v) for v in _rs.header_all(name)]

    def header_all_bytes(self, name):
        """Every value of header ``name``, as bytes."""
        return _rs.header_all(name)

    def headers(self):
        """All header fields in order (hop-by-hop fields removed), as ``Header``s."""
        return [Header(h.name, h.value) for h in _rs.headers()]

    @property
    def source(self):
        """``"upstream"`` or ``"cache"``."""
        return _SOURCE_NAMES[_rs.source()]

    @property
    def endpoint(self):
        """The endpoint (``host:port``) that answered, for a response from the upstream."""
        return _rs.endpoint()

    def __repr__(self):
        return f"Response({'?' if self._status is _UNSET else self._status})"


# ----------------------------------------------------------------------------------------------
# Algorithms

_ALGORITHM_NAMES = (
    "round_robin", "weighted_round_robin", "least_connections", "least_request",
    "least_response_time", "random", "ip_hash", "ring_hash", "maglev",
)
_ALGORITHM_RAW = {name: _t.Algorithm(i) for i, name in enumerate(_ALGORITHM_NAMES)}


class Algorithm:
    """The host's load-balancing algorithms, by their config names (plain strings)."""

    ROUND_ROBIN = "round_robin"
    WEIGHTED_ROUND_ROBIN = "weighted_round_robin"
    LEAST_CONNECTIONS = "least_connections"
    LEAST_REQUEST = "least_request"
    LEAST_RESPONSE_TIME = "least_response_time"
    RANDOM = "random"
    IP_HASH = "ip_hash"
    RING_HASH = "ring_hash"
    MAGLEV = "maglev"
    #: Every algorithm, in the order of the WIT enum.
    ALL = _ALGORITHM_NAMES

    @staticmethod
    def is_keyed(algorithm):
        """Whether it chooses by a key (hash key or client IP) rather than by load."""
        return parse_algorithm(algorithm) in ("ip_hash", "ring_hash", "maglev")


def parse_algorithm(s):
    """An algorithm name as the config writes it (``ring_hash``), accepting ``-`` for ``_``
    and any case (Rust's ``Algorithm::from_str``). Raises ValueError for an unknown name."""
    name = _ascii_lower(_text(s, "algorithm").strip(_WS)).replace("-", "_")
    if name not in _ALGORITHM_RAW:
        raise ValueError(
            f"unknown algorithm `{s}` (expected one of {', '.join(_ALGORITHM_NAMES)})")
    return name


def _algorithm_raw(a):
    if a is None:
        return None
    r = _ALGORITHM_RAW.get(a)
    return r if r is not None else _ALGORITHM_RAW[parse_algorithm(a)]


# ----------------------------------------------------------------------------------------------
# Decisions

_SET = _t.EditOp.SET
_APPEND = _t.EditOp.APPEND
_REMOVE = _t.EditOp.REMOVE
_HeaderEdit = _t.HeaderEdit
_RawHeader = _t.Header


class Decision:
    """The answer to one request: forward it upstream or respond locally.

    Start with ``forward(pool)``, ``forward_default()`` or ``respond(status, body)``, then
    chain: every method changes the decision in place and returns it. Methods that only make
    sense for a forward (endpoint, algorithm, hash_key, the cache methods, the request-header
    methods, rewrite) have no effect on a local response; the response-header methods edit a
    local response's header list directly. Header names are sent lower-cased. Values are str
    (sent as UTF-8) or bytes.
    """

    __slots__ = ("_raw", "_fwd")

    def __init__(self, raw, fwd):
        self._raw = raw  # types.Decision_Forward | types.Decision_Respond
        self._fwd = fwd  # the types.Forward, or None for a local response

    @property
    def is_forward(self):
        """Whether this decision forwards the request upstream."""
        return self._fwd is not None

    @property
    def is_local(self):
        """Whether this decision is a local response."""
        return self._fwd is None

    def endpoint(self, addr):
        """Sends the request to this endpoint (``host:port``) of the pool."""
        addr = _text(addr, "endpoint")
        if self._fwd is not None:
            self._fwd.target.endpoint = addr
        return self

    def algorithm(self, algorithm):
        """Picks the endpoint with ``algorithm`` (an ``Algorithm`` name) for this request."""
        raw = _algorithm_raw(algorithm)
        if self._fwd is not None:
            self._fwd.target.algorithm = raw
        return self

    def hash_key(self, key):
        """Keeps requests with the same key (str or bytes) on the same endpoint."""
        key = _bytes(key, "hash_key")
        if self._fwd is not None:
            self._fwd.target.hash_key = key
        return self

    def cache_key(self, key):
        """The cache key for the response (default: ``req.default_cache_key()``)."""
        key = _bytes(key, "cache_key")
        if self._fwd is not None:
            self._fwd.cache.key = key
        return self

    def ttl(self, secs):
        """Caches the response for ``secs`` seconds, whatever the origin's headers say."""
        _u32(secs, "ttl")
        if self._fwd is not None:
            self._fwd.cache.ttl_secs = secs
        return self

    def no_cache(self):
        """Neither looks the request up in the cache nor stores its response."""
        if self._fwd is not None:
            self._fwd.cache.bypass = True
        return self

    def cache_tag(self, tag):
        """Labels the cached response with ``tag``, for purging. Repeatable."""
        tag = _text(tag, "cache_tag")
        if self._fwd is not None:
            self._fwd.cache.tags.append(tag)
        return self

    def set_request_header(self, name, value):
        """Sets request header ``name`` upstream, replacing every value it had."""
        return self._request_edit(_SET, name, value)

    def append_request_header(self, name, value):
        """Adds ``value`` as one more line of request header ``name`` upstream."""
        return self._request_edit(_APPEND, name, value)

    def remove_request_header(self, name):
        """Removes every value of request header ``name`` before forwarding."""
        return self._request_edit(_REMOVE, name, _EMPTY)

    def set_response_header(self, name, value):
        """Sets response header ``name``, replacing every value (local response: its list)."""
        return self._response_edit(_SET, name, value)

    def append_response_header(self, name, value):
        """Adds a line of response header ``name`` (local response: same as ``header``)."""
        return self._response_edit(_APPEND, name, value)

    def remove_response_header(self, name):
        """Removes response header ``name`` (local response: from its list)."""
        return self._response_edit(_REMOVE, name, _EMPTY)

    def header(self, name, value):
        """Adds a header to the response the client gets (on a forward:
        ``append_response_header``)."""
        return self._response_edit(_APPEND, name, value)

    def rewrite(self, path_and_query):
        """Replaces the request target (path and query) sent upstream; must start with ``/``."""
        path_and_query = _text(path_and_query, "rewrite")
        if self._fwd is not None:
            self._fwd.rewrite = path_and_query
        return self

    def _request_edit(self, op, name, value):
        name = _ascii_lower(_text(name, "header name"))
        value = _bytes(value, "header value")
        if self._fwd is not None:
            self._fwd.request_edits.append(_HeaderEdit(op, name, value))
        return self

    def _response_edit(self, op, name, value):
        name = _ascii_lower(_text(name, "header name"))
        value = _bytes(value, "header value")
        if self._fwd is not None:
            self._fwd.response_edits.append(_HeaderEdit(op, name, value))
        else:
            local = self._raw.value
            if op is not _APPEND:
                local.headers = [h for h in local.headers if h.name != name]
            if op is not _REMOVE:
                local.headers.append(_RawHeader(name, value))
        return self

    def __repr__(self):
        return f"Decision({self._raw!r})"


def _forward_to(pool):
    f = _t.Forward(
        _t.Target(pool, None, None, None),
        _t.CachePolicy(None, False, None, []),
        [], [], None)
    return Decision(_t.Decision_Forward(f), f)


def forward(pool):
    """Forwards the request to the pool named ``pool`` in the host's config."""
    return _forward_to(_text(pool, "forward"))


def forward_default():
    """Forwards the request to the host's default pool (``proxy.default_pool``)."""
    return _forward_to(None)


def respond(status, body=b""):
    """Answers the client directly with ``status`` (200..=599) and ``body`` (str or bytes).

    In ``on_response`` it replaces the upstream's response. Add headers with
    ``.header(name, value)``. The host adds ``content-length``.
    """
    _u16(status, "respond status")
    return Decision(_t.Decision_Respond(_t.LocalResponse(status, [], _bytes(body, "respond body"))),
                    None)


class ResponseDecision:
    """What ``on_response`` does with a response it serves: header edits and storage changes.
    Start with ``serve()``; every method changes it in place and returns it."""

    __slots__ = ("_serve",)

    def __init__(self):
        self._serve = _t.Serve([], None, [], False)

    def _edit(self, op, name, value):
        name = _ascii_lower(_text(name, "header name"))
        self._serve.edits.append(_HeaderEdit(op, name, _bytes(value, "header value")))
        return self

    def set_header(self, name, value):
        """Replaces every value of response header ``name``."""
        return self._edit(_SET, name, value)

    def append_header(self, name, value):
        """Adds a value of response header ``name``."""
        return self._edit(_APPEND, name, value)

    def remove_header(self, name):
        """Removes response header ``name``."""
        return self._edit(_REMOVE, name, _EMPTY)

    def ttl(self, secs):
        """Stores the response for ``secs`` seconds (upstream responses only; RFC 9111 rules)."""
        self._serve.ttl_secs = _u32(secs, "ttl")
        return self

    def cache_tag(self, tag):
        """Adds a purge tag to the stored response (upstream responses only)."""
        self._serve.tags.append(_text(tag, "cache_tag"))
        return self

    def tag(self, tag):
        """Same as ``cache_tag``."""
        return self.cache_tag(tag)

    def no_store(self):
        """Serves the response without storing it (upstream responses only)."""
        self._serve.no_store = True
        return self

    def __repr__(self):
        return f"ResponseDecision({self._serve!r})"


def serve():
    """Serves the response (unchanged unless you chain edits), from ``on_response``."""
    return ResponseDecision()


# ----------------------------------------------------------------------------------------------
# Host services

class SettingError(ValueError):
    """A setting whose value could not be read as the type asked for."""

    def __init__(self, key, value, expected):
        super().__init__(f"setting `{key}` = `{value}`: expected {expected}")
        self.key = key
        self.value = value
        self.expected = expected


_TRUE = frozenset(("true", "on", "yes", "1"))
_FALSE = frozenset(("false", "off", "no", "0"))
_INT_CHARS = frozenset("0123456789")
_FLOAT_CHARS = frozenset("0123456789+-.eE")
_FLOAT_WORDS = frozenset(("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity",
                          "nan", "+nan", "-nan"))


class config:
    """The policy's settings: the ``[policy.settings]`` table of the host's config, as text
    (numbers and booleans as TOML writes them). Fixed for the life of a revision."""

    def __init__(self):  # pragma: no cover
        raise TypeError("sluice.config is a namespace")

    @staticmethod
    def get(key):
        """The value of setting ``key`` as text, or None when it is not set."""
        return _cfg.get(key)

    @staticmethod
    def get_or(key, default):
        """The value of setting ``key``, or ``default`` when it is not set."""
        v = _cfg.get(key)
        return default if v is None else v

    @staticmethod
    def get_bool(key):
        """Setting ``key`` as a bool (true/on/yes/1, false/off/no/0, any case), None when not
        set. Raises SettingError for anything else."""
        v = _cfg.get(key)
        if v is None:
            return None
        t = _ascii_lower(v.strip(_WS))
        if t in _TRUE:
            return True
        if t in _FALSE:
            return False
        raise SettingError(key, v, "a boolean (true/false/on/off/yes/no/1/0)")

    @staticmethod
    def get_int(key):
        """Setting ``key`` as an int (ASCII digits, optional sign), None when not set. Raises
        SettingError otherwise."""
        v = _cfg.get(key)
        if v is None:
            return None
        t = v.strip(_WS)
        digits = t[1:] if t[:1] in ("+", "-") else t
        if not digits or not _INT_CHARS.issuperset(digits):
            raise SettingError(key, v, "an integer")
        return int(t)

    @staticmethod
    def get_float(key):
        """Setting ``key`` as a float (Rust's ``f64`` syntax: ``1``, ``0.5``, ``1e3``,
        ``inf``), None when not set. Raises SettingError otherwise."""
        v = _cfg.get(key)
        if v is None:
            return None
        t = v.strip(_WS)
        if not t or not (_FLOAT_CHARS.issuperset(t) or _ascii_lower(t) in _FLOAT_WORDS):
            raise SettingError(key, v, "a number")
        try:
            return float(t)
        except ValueError:
            raise SettingError(key, v, "a number") from None


_LEVELS = {
    "trace": _log.Level.TRACE, "debug": _log.Level.DEBUG, "info": _log.Level.INFO,
    "warn": _log.Level.WARN, "error": _log.Level.ERROR,
}
_raw_log = _log.log


class log:
    """Lines for the host's log (target ``sluice::guest``), tagged with the policy name and
    revision. The host cuts messages at 4 KiB and drops lines below its level."""

    def __init__(self):  # pragma: no cover
        raise TypeError("sluice.log is a namespace")

    @staticmethod
    def log(level, message):
        """Writes ``message`` at ``level``: ``"trace"``, ``"debug"``, ``"info"``, ``"warn"``
        or ``"error"``."""
        raw = _LEVELS.get(level)
        if raw is None:
            raise ValueError(f"unknown log level `{level}` (expected one of "
                             f"{', '.join(_LEVELS)})")
        _raw_log(raw, message if type(message) is str else str(message))

    @staticmethod
    def trace(message):
        _raw_log(_log.Level.TRACE, message if type(message) is str else str(message))

    @staticmethod
    def debug(message):
        _raw_log(_log.Level.DEBUG, message if type(message) is str else str(message))

    @staticmethod
    def info(message):
        _raw_log(_log.Level.INFO, message if type(message) is str else str(message))

    @staticmethod
    def warn(message):
        _raw_log(_log.Level.WARN, message if type(message) is str else str(message))

    @staticmethod
    def error(message):
        _raw_log(_log.Level.ERROR, message if type(message) is str else str(message))


#: One endpoint of a pool with its live state: ``addr``, ``weight``, ``healthy``,
#: ``in_flight``, ``ewma_latency_us`` (the WIT record as generated).
Endpoint = _bal.Endpoint


class balancer:
    """The host's pools and load balancing, as the host sees them at the moment of the call."""

    def __init__(self):  # pragma: no cover
        raise TypeError("sluice.balancer is a namespace")

    @staticmethod
    def pick(pool, algorithm=None, hash_key=None):
        """Picks an endpoint of ``pool`` as the host would for a forward with the same
        algorithm and hash key; None when the pool is unknown or nothing is eligible."""
        key = None if hash_key is None else _bytes(hash_key, "balancer.pick hash_key")
        return _bal.pick(_text(pool, "balancer.pick"), _algorithm_raw(algorithm), key)

    @staticmethod
    def pick_with_key(pool, key):
        """``pick`` by a hash key with the pool's algorithm."""
        return _bal.pick(_text(pool, "balancer.pick_with_key"), None,
                         _bytes(key, "balancer.pick_with_key key"))

    @staticmethod
    def endpoints(pool):
        """Every endpoint of ``pool`` in config order (``Endpoint``s); empty when unknown."""
        return _bal.endpoints(_text(pool, "balancer.endpoints"))


_HEALTH_NAMES = {_hl.State.HEALTHY: "healthy", _hl.State.UNHEALTHY: "unhealthy",
                 _hl.State.EJECTED: "ejected"}


class health:
    """The health of the host's endpoints (active checks and outlier detection)."""

    def __init__(self):  # pragma: no cover
        raise TypeError("sluice.health is a namespace")

    @staticmethod
    def status(pool, addr):
        """``"healthy"``, ``"unhealthy"`` or ``"ejected"``; None when no such pool/endpoint."""
        s = _hl.status(_text(pool, "health.status"), _text(addr, "health.status"))
        return None if s is None else _HEALTH_NAMES[s]


class CacheEntry:
    """A stored response: ``age_secs``, ``ttl_secs`` (negative once stale), ``status``,
    ``size``, ``tags``, and ``is_fresh``."""

    __slots__ = ("age_secs", "ttl_secs", "status", "size", "tags")

    def __init__(self, e):
        self.age_secs = e.age_secs
        self.ttl_secs = e.ttl_secs
        self.status = e.status
        self.size = e.size
        self.tags = e.tags

    @property
    def is_fresh(self):
        return self.ttl_secs > 0

    def __repr__(self):
        return (f"CacheEntry(age_secs={self.age_secs}, ttl_secs={self.ttl_secs}, "
                f"status={self.status}, size={self.size}, tags={self.tags!r})")


class cache:
    """The host's HTTP cache. Without a ``[cache]`` table, ``peek`` returns None and purges 0."""

    def __init__(self):  # pragma: no cover
        raise TypeError("sluice.cache is a namespace")

    @staticmethod
    def peek(key):
        """The newest response stored under ``key`` (str or bytes), or None."""
        e = _ch.peek(_bytes(key, "cache.peek"))
        return None if e is None else CacheEntry(e)

    @staticmethod
    def purge_key(key, soft=False):
        """Purges what is stored under ``key`` (soft: marks it stale). Returns how many."""
        return _ch.purge_key(_bytes(key, "cache.purge_key"), bool(soft))

    @staticmethod
    def purge_tag(tag, soft=False):
        """Purges everything tagged ``tag`` (soft: marks it stale). Returns how many."""
        return _ch.purge_tag(_text(tag, "cache.purge_tag"), bool(soft))


# ----------------------------------------------------------------------------------------------
# Glue for the entry module build.sh generates (not part of the API).

def _describe(v):
    if v is None:
        return "None"
    return f"a {type(v).__name__}"


def _where(e):
    """`file:line in function` of the innermost frame of `e` (no file I/O)."""
    tb = e.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f" at {code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} in {code.co_name}"


def _fail(phase, e):
    """Logs why the policy failed at error level, then lets the exception trap the call."""
    try:
        _raw_log(_log.Level.ERROR, f"{phase} raised {type(e).__name__}: {e}{_where(e)}")
    except BaseException:  # pragma: no cover - never mask the original error
        pass


def _decide(fn):
    """Calls the policy's decide(req) and lowers the result to `types.decision`."""
    try:
        d = fn(Request())
        if type(d) is not Decision:
            raise TypeError("decide(req) must return a Decision (forward(...), "
                            f"forward_default() or respond(...)), got {_describe(d)}")
        return d._raw
    except BaseException as e:
        _fail("decide", e)
        raise


def _on_response(fn):
    """Calls the policy's on_response(req, resp) and lowers it to `types.response-decision`."""
    try:
        d = fn(Request(), Response())
        t = type(d)
        if t is ResponseDecision:
            return _t.ResponseDecision_Serve(d._serve)
        if d is None:
            return _t.ResponseDecision_Serve(_t.Serve([], None, [], False))
        if t is Decision and d._fwd is None:
            return _t.ResponseDecision_Respond(d._raw.value)
        raise TypeError("on_response(req, resp) must return serve(...), respond(...) or None, "
                        f"got {'a forward Decision' if t is Decision else _describe(d)}")
    except BaseException as e:
        _fail("on_response", e)
        raise


def _warm():
    """Runs the SDK's pure code paths once, at build time (pre-initialisation), so the first
    request does not pay for first-use work. Touches no host import (those trap at build)."""
    d = (forward("p").endpoint("a:1").algorithm("maglev").hash_key("k").cache_key(b"k")
         .ttl(1).no_cache().cache_tag("t").set_request_header("X-A", "1")
         .append_request_header("x-b", b"2").remove_request_header("x-c")
         .set_response_header("x-d", "4").append_response_header("x-e", "5")
         .remove_response_header("x-f").header("x-g", "6").rewrite("/x"))
    forward_default().no_cache().ttl(60)
    respond(503, "x").header("Retry-After", "1").set_response_header("retry-after", "2") \
        .remove_response_header("x")
    serve().set_header("X-A", "1").append_header("x-b", "2").remove_header("x-c").ttl(1) \
        .tag("t").no_store()
    _host_of("example.com:8080"), _host_of("[::1]:443"), _host_of("example.com")
    _cache_key("https", "Example.com", "/s", "q=x&a=1&&b")
    _query_param("a=1&b=2", "b")
    _cookie_in(b"a=1; ab=xyz;  c = 3", "ab"), _cookie_in(b"\xff", "x")
    _lossy(b"a\xff"), _utf8(b"a"), _ascii_lower("X-\u00c9")
    parse_algorithm("Ring-Hash"), Algorithm.is_keyed("maglev")
    try:
        _u32(-1, "ttl")
    except ValueError:
        pass
    f"{d!r}"
    for t in (ResponseDecision, Decision):
        type(t) is t
    _describe(None)


_warm()
