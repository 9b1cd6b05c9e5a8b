"""The service's cross-origin policy: no request that changes state or costs work from another site.

A web page the user visits can send a loopback service requests without any CORS preflight: a
POST whose body is multipart or raw bytes is a "simple" request, and the browser delivers it (it
only hides the answer). Such posts could evict the user's cached images or keep the service
busy. So a POST, PUT, PATCH or DELETE is refused (403) when the browser says it comes from
another site: an `Origin` header that is not the service's own origin (scheme://host:port, from
the request's Host header) nor one allowed with `serve --allow-origin`, or a `Sec-Fetch-Site` of
`cross-site` or `same-site` (another port or subdomain is another site's page too) from an origin
not allowed. A request with neither header (curl, scripts, the service's own tests) is a
program, not a page a user was lured to, and is served; GET and HEAD are never refused here.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from ..errors import ConfigError

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(scheme: str, host: str, port: int | None) -> tuple[str, str, int | None]:
    return scheme.lower(), host.lower(), port or _DEFAULT_PORTS.get(scheme.lower())


def parse_origin(value: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an origin `scheme://host[:port]`; None when it is not one
    (e.g. the literal 'null' a sandboxed page or a file:// page sends)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        return None
    return _origin_key(parts.scheme, parts.hostname, port)


def check_allowed_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """The `--allow-origin` values, each validated as http(s)://host[:port]."""
    checked = []
    for origin in origins:
        if parse_origin(origin) is None:
            raise ConfigError(f"--allow-origin {origin!r} is not an origin: give the address of the web "
                              "page's site as scheme://host[:port], e.g. --allow-origin "
                              "http://localhost:3000 (no path, no '*').")
        checked.append(origin.strip().rstrip("/"))
    return tuple(checked)


def own_origin(scope, host: str) -> tuple[str, str, int | None] | None:
    """The origin this request was sent to: the scheme it came in with and its Host header."""
    return parse_origin(f"{scope.get('scheme', 'http')}://{host}") if host else None


def refusal(method: str, headers: dict[bytes, bytes], scope, allowed: frozenset) -> str | None:
    """Why this request is refused as coming from another site, or None to serve it.
    `allowed`: the parsed origins of `--allow-origin` (parse_origin)."""
    if method not in UNSAFE_METHODS:
        return None
    origin = headers.get(b"origin", b"").decode("latin-1").strip()
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
    key = parse_origin(origin) if origin else None
    if key is not None and key in allowed:
        return None
    if origin and key != own_origin(scope, headers.get(b"host", b"").decode("latin-1")):
        return _message(method, origin, site)
    if site in ("cross-site", "same-site"):  # another site's page, even without an Origin
        return _message(method, origin, site)
    return None  # same-origin, typed into the address bar ('none'), or not a browser at all


def _message(method: str, origin: str, site: str) -> str:
    seen = f"Origin: {origin}" if origin else f"Sec-Fetch-Site: {site}"
    allow = f"--allow-origin {origin}" if parse_origin(origin) else "--allow-origin <scheme://host:port>"
    return (f"Refused a {method} from another site ({seen}): this service takes requests that change "
            "state or cost work only from its own pages, or from programs that send no Origin header "
            f"(curl, scripts). To let a web page at that origin use it, start the service with {allow} "
            "(create_app(..., allowed_origins=[...])).")
