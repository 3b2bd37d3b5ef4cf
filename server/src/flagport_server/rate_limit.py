"""Rate limits on the evaluation surface (optional, off by default; docs/spec.md section 12).

``flags serve --rate-limit N`` gives every client N requests a second on the evaluation
surface (OFREP single and bulk, ``GET /v1/evaluate``, the change stream), with bursts of
``--rate-burst`` (default 2N), counted by each worker on its own. A client is its token when
it sends a valid one (``Authorization: Bearer`` or ``X-API-Key``), else its address: a
made-up token per request would otherwise be a fresh bucket each time, and on a bind whose
open scope lets evaluation through without a token nothing else would refuse it. The address is
the connection's peer, or, when the peer is a ``--trusted-proxy``, the nearest address in
``X-Forwarded-For`` that is not one: a client cannot pick its own address by sending the
header. Over the limit: 429 with ``Retry-After`` in integer seconds, the form every published
OpenFeature provider parses (an HTTP date does not parse in all of them), and the body of
the surface's other request failures.

A token bucket per client in a dict bounded by :data:`MAX_CLIENTS`: past it, the clients
whose buckets are full again (idle for long enough) are forgotten, then if need be the oldest
half, so a flood of addresses or made-up tokens costs bounded memory and can at worst give
the flooder's own keys a fresh bucket. A made-up token gets 401 from the app whatever its
bucket says, and failed token checks have their own limit per address (section 5).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable
from typing import Final

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from flagport_server.cors import CorsPolicy
from flagport_server.surface import evaluation_surface_method, send_answer

__all__ = ["MAX_CLIENTS", "ClientBuckets", "RateLimit", "TrustedProxies", "parse_network"]

#: Clients (tokens and addresses) a worker keeps a bucket for at most.
MAX_CLIENTS: Final = 100_000
#: Addresses read from ``X-Forwarded-For`` at most: a longer header is cut from the left.
_MAX_FORWARDED_HOPS: Final = 16

_HTTP: str = ScopeType.HTTP
_TOKEN_HEADERS: Final = frozenset({b"authorization", b"x-api-key"})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """An address or a CIDR network for ``--trusted-proxy``; ValueError naming the problem."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address or network (for example 10.0.0.1 or 10.0.0.0/8)"
        ) from None


class TrustedProxies:
    """Which peers' ``X-Forwarded-For`` is believed, and the client address it gives."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(parse_network(network) for network in networks)

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self.networks)

    def client_address(self, peer: str, forwarded_for: bytes | None) -> str:
        """The client's address: the peer, unless it is a trusted proxy that says who it
        forwarded for; then the right-most address in the header that is not a trusted proxy
        (the left-most entries are whatever the client chose to send)."""
        if forwarded_for is None or not self.trusts(peer):
            return peer
        hops = forwarded_for.decode("latin-1").split(",")[-_MAX_FORWARDED_HOPS:]
        for hop in reversed(hops):
            address = hop.strip()
            try:
                ipaddress.ip_address(address)
            except ValueError:
                return peer  # a garbled header: the proxy's own address is all we know
            if not self.trusts(address):
                return address
        return peer


class ClientBuckets:
    """Token buckets: ``rate`` requests a second, ``burst`` at once, per client key."""

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a rate > 0 and a burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        #: key -> (tokens left, when they were counted); insertion order is first-seen order.
        self._buckets: dict[int | str, tuple[float, float]] = {}

    def take(self, key: int | str, now: float) -> int | None:
        """Take one request for ``key``: None if allowed, else whole seconds to wait (>= 1)."""
        buckets = self._buckets
        found = buckets.get(key)
        if found is None:
            if len(buckets) >= self.max_clients:
                self._forget(now)
            buckets[key] = (self.burst - 1.0, now)
            return None
        tokens, then = found
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            return None
        buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget(self, now: float) -> None:
        """Make room: drop the buckets that are full again, then the oldest half if need be."""
        full_after = self.burst / self.rate
        buckets = self._buckets
        for key in [k for k, (_, then) in buckets.items() if now - then >= full_after]:
            del buckets[key]
        if len(buckets) >= self.max_clients:
            for key in list(buckets)[: len(buckets) // 2 + 1]:
                del buckets[key]


class RateLimit:
    """Answer 429 to clients over their rate on the evaluation surface; pass the rest."""

    def __init__(
        self,
        app: ASGIApp,
        rate: float,
        burst: int,
        trusted_proxies: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        cors: CorsPolicy | None = None,
        known_token: Callable[[str], bool] = lambda _secret: True,
    ) -> None:
        self.app = app
        #: Whether a presented secret is a valid token's (only then does it name the client).
        self.known_token = known_token
        #: Whose headers a 429 carries, so that a page can read its Retry-After.
        self.cors = cors
        self.buckets = ClientBuckets(rate, burst)
        self.proxies = TrustedProxies(trusted_proxies)
        self.rate = rate
        self._clock = clock

    def _client_key(self, scope: Scope) -> int | str:
        forwarded = None
        for name, value in scope["headers"]:
            if name in _TOKEN_HEADERS:
                # A valid token (``Bearer`` dropped), hashed to a fixed size: a client's own
                # bucket whatever address it comes from.
                secret = value.rpartition(b" ")[2].strip()
                if self.known_token(secret.decode("latin-1")):
                    return hash(secret)
                continue
            if name == b"x-forwarded-for":
                forwarded = value
        client = scope.get("client")
        peer = client[0] if client else ""
        if not peer:
            return "unix"  # a Unix-socket peer: the local app (one client)
        return self.proxies.client_address(peer, forwarded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != _HTTP or evaluation_surface_method(scope["path"]) is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":  # type: ignore[typeddict-item]
            await self.app(scope, receive, send)  # a preflight is not an evaluation
            return
        wait = self.admit(scope)
        if wait is None:
            await self.app(scope, receive, send)
            return
        await self.refuse(scope, send, wait)

    def admit(self, scope: Scope) -> int | None:
        """Take one request of the client of ``scope``: None if it may be served, else whole
        seconds to wait (the evaluation dispatch asks this for its own requests)."""
        return self.buckets.take(self._client_key(scope), self._clock())

    async def refuse(self, scope: Scope, send: Send, wait: int) -> None:
        """Answer 429: retry in ``wait`` seconds."""
        body = (
            b'{"errorCode":"GENERAL","errorDetails":"too many requests from this client: at most '
            + f"{self.rate:g} a second; retry in {wait} s".encode()
            + b'"}'
        )
        headers = [(b"content-type", b"application/json"), (b"retry-after", str(wait).encode())]
        cors = self.cors.headers_for(scope) if self.cors is not None else ()
        await send_answer(send, 429, headers, body, cors)
