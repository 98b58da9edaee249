"""Same-origin WebSockets: the Origin must be this site (scheme, host and port) or a trusted origin.

A browser sends cookies with a cross-site WebSocket handshake, so a page elsewhere could otherwise
read the live feed with the user's session. Channels' AllowedHostsOriginValidator compares only
the host: a page on another port of the same host passed. Here the Origin's scheme, host and port
must equal the request's own (the Host header, `wss` meaning https; default ports filled in) or
match an entry of CSRF_TRUSTED_ORIGINS as Django's CSRF check reads them ("https://*.example.com"
allows subdomains). The Host itself must be in ALLOWED_HOSTS, as for HTTP. Anything else gets the
handshake refused.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import SplitResult, urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _port(url: SplitResult) -> int | None:
    """The URL's port, its scheme's default when absent; None when malformed."""
    try:
        return url.port or _DEFAULT_PORTS.get(url.scheme)
    except ValueError:
        return None


def _trusted(origin: str, parsed: SplitResult) -> bool:
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        if "*" not in entry:
            if origin.lower() == entry.lower():
                return True
            continue
        pattern = urlsplit(entry.lower())
        # Django's reading: "https://*.example.com" allows example.com's subdomains on that scheme.
        if pattern.scheme == parsed.scheme and is_same_domain(parsed.netloc.lower(), pattern.netloc[pattern.netloc.index("*") + 1:]):
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    host, origin = _header(scope, b"host"), _header(scope, b"origin")
    if not host or not origin:
        return False
    allowed_hosts = settings.ALLOWED_HOSTS or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    if not validate_host(split_domain_port(host)[0], allowed_hosts):
        return False
    parsed = urlsplit(origin.strip())
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.hostname:
        return False
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    own = urlsplit(f"{scheme}://{host}")
    if (parsed.scheme, parsed.hostname, _port(parsed)) == (scheme, own.hostname, _port(own)) and _port(own):
        return True
    return _trusted(origin.strip(), parsed)


class SameOriginValidator:
    """ASGI middleware for the websocket stack: refuse the handshake unless origin_allowed()."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            logger.warning("live feed: refused Origin %r for Host %r", _header(scope, b"origin"), _header(scope, b"host"))
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
