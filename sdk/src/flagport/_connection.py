"""How every client reaches a Flagport server: the URL forms, the request headers, the
timeouts and the keep-alive. :class:`~flagport.Client`, :class:`~flagport.AsyncClient` and
:class:`~flagport.LocalClient` all import it, and it imports none of them (no import cycle
between the sync and async clients)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from flagport._exceptions import ClientError

__all__ = [
    "DEFAULT_TIMEOUT",
    "KEEPALIVE_EXPIRY",
    "USER_AGENT",
    "auth_headers",
    "background_client",
    "split_url",
]

USER_AGENT = "flagport-python/0.1.0"
#: Short on purpose: a flag check must never hold a request up for long.
DEFAULT_TIMEOUT = httpx.Timeout(0.5, connect=0.25)
#: Seconds a pooled connection may stay idle. The server closes keep-alive connections idle
#: for 5 s; dropping them sooner means never sending a request on one it is closing.
KEEPALIVE_EXPIRY = 4.0


def split_url(url: str) -> tuple[str, str | None]:
    """(base URL for httpx, Unix socket path or None). ``unix:///run/flagport.sock`` talks HTTP
    over that socket; ``http(s)://host:port/prefix`` keeps its path prefix."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        path = parts.path or parts.netloc
        if not path:
            raise ClientError(f"no socket path in {url!r} (use unix:///path/to/flagport.sock)")
        return "http://flagport", path
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"unsupported server URL {url!r}: use http://, https:// or unix://")
    return url.rstrip("/"), None


def auth_headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def background_client(url: str, token: str | None) -> httpx.Client:
    """A small synchronous pool to ``url`` for a background thread's posts (an async
    client's outcome reports: its own pool belongs to an event loop)."""
    base_url, uds = split_url(url)
    return httpx.Client(
        base_url=base_url,
        headers=auth_headers(token),
        timeout=DEFAULT_TIMEOUT,
        transport=httpx.HTTPTransport(
            uds=uds,
            verify=not base_url.startswith("http://"),
            limits=httpx.Limits(max_connections=2, keepalive_expiry=KEEPALIVE_EXPIRY),
        ),
    )
