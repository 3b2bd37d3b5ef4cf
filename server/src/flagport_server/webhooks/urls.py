"""A webhook's URL: what is accepted (:func:`check_url`) and how it is shown
(:func:`url_hint`: a Slack incoming-webhook URL is itself a credential)."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Final
from urllib.parse import urlsplit

from flagport_server.errors import InvalidInput
from flagport_server.settings import Settings, is_loopback

__all__ = ["MAX_URL_LENGTH", "check_url", "url_hint"]

MAX_URL_LENGTH: Final = 2048
#: A path segment this long or longer looks like a token: shown as its first 4 characters.
_SECRET_LOOKING: Final = 16
_WILDCARDS: Final = frozenset({"0.0.0.0", "::"})
_CONTROL_OR_SPACE: Final = re.compile(r"[\x00-\x20\x7f]")


def check_url(url: str, settings: Settings, path: str = "$.url") -> str:
    """``url`` if a webhook may use it, else :class:`InvalidInput` saying why: an absolute
    http(s) URL with a host, at most :data:`MAX_URL_LENGTH` characters, no spaces or control
    characters, and not this server itself (its listen address and port, any loopback
    address on its port when it listens on loopback or on every address, and its public
    URL): a webhook that calls the server would make a change per delivery at worst, and
    load on the admin API at least. Names are not resolved (no DNS on a request)."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"the URL is longer than {MAX_URL_LENGTH} characters", path)
    if _CONTROL_OR_SPACE.search(url):
        raise InvalidInput("the URL contains spaces or control characters", path)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidInput(f"not a valid URL: {error}", path) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(
            f"the URL must start with http:// or https://, not {parts.scheme[:20] or 'nothing'}",
            path,
        )
    host = _address_text((parts.hostname or "").lower(), path)
    if not host:
        raise InvalidInput("the URL has no host", path)
    port = port or (443 if parts.scheme == "https" else 80)
    if _is_self(host, port, settings):
        raise InvalidInput(
            f"the URL points at this Flagport server itself ({host}:{port}); a webhook must "
            "reach another service",
            path,
        )
    return url


def _address_text(host: str, path: str) -> str:
    """``host`` as the check compares it: an address in its canonical form (an IPv4 address
    mapped into IPv6 as the IPv4 one), a name as it is. The legacy IPv4 forms the system's
    resolver still connects to (``127.1``, ``2130706433``, ``0x7f.1``) are refused: they
    would reach this server past the check."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            packed = socket.inet_aton(host)
        except OSError:
            return host  # a name
        raise InvalidInput(
            f"write the IPv4 address {host!r} in dotted-quad form "
            f"({ipaddress.IPv4Address(packed)})",
            path,
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _is_self(host: str, port: int, settings: Settings) -> bool:
    public = settings.public_url
    if public:
        parts = urlsplit(public)
        public_port = parts.port or (443 if parts.scheme == "https" else 80)
        if (parts.hostname or "").lower() == host and public_port == port:
            return True
    if settings.uds is not None or port != settings.port:
        return False
    bound = settings.host.lower()
    if host == bound or host in _WILDCARDS:
        return True
    return _loopback(host) and (is_loopback(bound) or bound in _WILDCARDS)


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_hint(url: str) -> str:
    """``url`` as lists, logs and audit entries show it: without its user and password or
    its query, and each path segment that looks like a token cut to 4 characters
    (``https://hooks.slack.com/services/T0AB…/B0CD…/XyZ1…``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    where = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    segments = [s[:4] + "…" if len(s) >= _SECRET_LOOKING else s for s in parts.path.split("/")]
    query = "?…" if parts.query else ""
    return where + "/".join(segments) + query
