"""Redis store URLs: parsed and checked without connecting (see the package docstring)."""

from __future__ import annotations

import urllib.parse
from typing import Any, Final

import msgspec

from flagport_server.errors import InvalidInput
from flagport_server.stores import redact_store_url

__all__ = ["RedisOptions", "parse_redis_url"]


_SCHEMES: Final = ("redis", "rediss", "redis+sentinel")
_BOOL: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_OPTIONS: Final = frozenset(
    {
        "prefix",
        "cluster",
        "socket_timeout",
        "connect_timeout",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "sentinel_password",
    }
)


class RedisOptions(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed store URL. ``location`` names the server(s) for messages, never the
    password."""

    scheme: str
    hosts: list[tuple[str, int]]
    db: int = 0
    username: str | None = None
    password: str | None = None
    service: str | None = None  # Sentinel
    prefix: str = "flagport"
    cluster: bool | None = None  # None: ask the server
    socket_timeout: float = 1.0
    connect_timeout: float = 0.5
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_check_hostname: bool = False
    sentinel_password: str | None = None

    def __repr__(self) -> str:
        # The generated repr would show both passwords to whoever logs or prints the options.
        return f"RedisOptions({self.location!r})"

    @property
    def location(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        if self.service is not None:
            return f"{self.scheme}://{hosts}/{self.service}/{self.db}"
        return f"{self.scheme}://{hosts}/{self.db}"


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, path="store_url")


def _parse_hosts(netloc: str, default_port: int, shown: str) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        if not part:
            raise _invalid(f"{shown}: empty host")
        if part.startswith("["):  # [::1]:6379
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = part.partition(":")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise _invalid(f"{shown}: port {port_text!r} is not a number") from None
        if not host or not 0 < port < 65536:
            raise _invalid(f"{shown}: bad host {part!r}")
        hosts.append((host, port))
    return hosts


def parse_redis_url(url: str) -> RedisOptions:
    """Check and parse a ``redis://``, ``rediss://`` or ``redis+sentinel://`` URL without
    connecting. :raises InvalidInput: naming the problem, never repeating the password."""
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in _SCHEMES:
        raise _invalid(f"not a Redis store URL (scheme {scheme!r})")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        userinfo, hostpart = "", rest
    shown = redact_store_url(url)
    netloc, _, path_query = hostpart.partition("/")
    path, _, query = path_query.partition("?")
    if "?" in netloc:  # redis://host?x=1 (no path)
        netloc, _, query = netloc.partition("?")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else None
        if not colon:  # redis://password@host is a common mistake; treat it as a password
            username, password = None, urllib.parse.unquote(user)
    default_port = 26379 if scheme == "redis+sentinel" else 6379
    hosts = _parse_hosts(netloc, default_port, shown)
    parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
    service = None
    if scheme == "redis+sentinel":
        if not parts:
            raise _invalid(f"{shown}: a Sentinel URL names the service: .../<service>/<db>")
        service, parts = parts[0], parts[1:]
    elif len(hosts) > 1:
        raise _invalid(f"{shown}: several hosts are only for redis+sentinel:// URLs")
    if len(parts) > 1:
        raise _invalid(f"{shown}: the path is /<db> (a number)")
    try:
        db = int(parts[0]) if parts else 0
    except ValueError:
        raise _invalid(f"{shown}: database {parts[0]!r} is not a number") from None
    options: dict[str, Any] = {}
    for name, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        if name not in _OPTIONS:
            raise _invalid(
                f"{shown}: unknown option {name!r}; known: {', '.join(sorted(_OPTIONS))}"
            )
        value = values[-1]
        if name in ("socket_timeout", "connect_timeout"):
            try:
                options[name] = float(value)
            except ValueError:
                raise _invalid(f"{shown}: {name}={value!r} is not a number") from None
            if options[name] <= 0:
                raise _invalid(f"{shown}: {name} must be positive")
        elif name == "cluster":
            if value.lower() == "auto":
                options[name] = None
            elif value.lower() in _BOOL:
                options[name] = _BOOL[value.lower()]
            else:
                raise _invalid(f"{shown}: cluster must be auto, true or false")
        elif name == "ssl_check_hostname":
            if value.lower() not in _BOOL:
                raise _invalid(f"{shown}: {name} must be true or false")
            options[name] = _BOOL[value.lower()]
        elif name == "ssl_cert_reqs":
            if value not in ("required", "optional", "none"):
                raise _invalid(f"{shown}: ssl_cert_reqs must be required, optional or none")
            options[name] = value
        elif name == "prefix":
            if not value or any(c in value for c in "{}: "):
                raise _invalid(
                    f"{shown}: prefix must be non-empty, without braces, colons or spaces"
                )
            options[name] = value
        else:
            options[name] = value
    if scheme == "redis" and any(n.startswith("ssl_") for n in options):
        raise _invalid(f"{shown}: ssl_* options need a rediss:// URL")
    if options.get("cluster") and (scheme == "redis+sentinel" or db != 0):
        raise _invalid(f"{shown}: Redis Cluster has only database 0 and no Sentinel")
    return RedisOptions(
        scheme=scheme,
        hosts=hosts,
        db=db,
        username=username,
        password=password,
        service=service,
        **options,
    )
