"""Stream tickets: how a browser's ``EventSource`` opens the change stream of a server that
needs tokens (docs/spec.md section 12).

``EventSource`` cannot send an ``Authorization`` header, so the bulk answer to a request made
with a token advertises a stream URL carrying a ticket: ``<token id>.<day>.<mac>``, where the
day is the UTC day number and the mac an HMAC-SHA256, keyed by the server secret (one per
store, shared by every worker and instance), of the token id, the day and the token's
credential (the hash of its secret: a ticket made before the token was rotated no longer
checks). A ticket is valid on the day it was made and the next, so at least 24 hours; the
bulk answer's ETag carries the day, so a client revalidating with it never keeps an expired
URL. A ticket proves only that a holder of the token asked for it: whether the token is
still valid (not revoked) and may use the stream is checked when the stream opens, and
revoking or rotating it ends open streams.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final, NamedTuple

__all__ = [
    "MAX_TICKET_LENGTH",
    "Ticket",
    "TicketError",
    "TicketOf",
    "check_ticket",
    "day_of",
    "mint_ticket",
    "read_ticket",
]

#: A ticket is short; a longer query value is refused before anything is computed.
MAX_TICKET_LENGTH: Final = 128
#: Days a ticket is valid: the day it was made and the next.
_VALID_DAYS: Final = 2
_MAC_BYTES: Final = 18  # 144 bits, 24 characters of base64url
_TICKET = re.compile(r"([0-9A-Za-z_-]{1,64})\.(\d{1,9})\.([0-9A-Za-z_-]{24})")


class TicketOf(NamedTuple):
    """What a ticket is made of: the server secret, the token's id and credential, and the
    UTC day."""

    key: bytes
    token_id: str
    day: int
    credential: str


class Ticket(NamedTuple):
    """A ticket's parts, read but not yet checked (:func:`check_ticket`)."""

    token_id: str
    day: int
    mac: str


class TicketError(ValueError):
    """A ticket that does not open a stream; the message says why (an HTTP 401)."""


def day_of(now: float) -> int:
    """The UTC day number of ``now`` (seconds since the epoch)."""
    return int(now // 86400)


def _mac(secret: bytes, token_id: str, day: int, credential: str) -> str:
    text = f"stream-ticket|{token_id}|{day}|{credential}"
    digest = hmac.new(secret, text.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:_MAC_BYTES]).decode()


def mint_ticket(secret: bytes, token_id: str, day: int, credential: str) -> str:
    """The ticket of token ``token_id`` (whose secret's hash is ``credential``) made on UTC
    day ``day``."""
    return f"{token_id}.{day}.{_mac(secret, token_id, day, credential)}"


def read_ticket(ticket: str) -> Ticket:
    """The parts of ``ticket`` (which token to look up before :func:`check_ticket`);
    :class:`TicketError` if it is not shaped as one."""
    if len(ticket) > MAX_TICKET_LENGTH:
        raise TicketError("the stream ticket is not one this server makes (too long)")
    match = _TICKET.fullmatch(ticket)
    if match is None:
        raise TicketError("the stream ticket is not one this server makes")
    token_id, day_text, mac = match.groups()
    return Ticket(token_id, int(day_text), mac)


def check_ticket(secret: bytes, ticket: Ticket, credential: str, today: int) -> None:
    """Whether ``ticket`` was made by this server for its token's ``credential`` of now and
    has not expired on UTC day ``today``; :class:`TicketError` saying why not."""
    expected = _mac(secret, ticket.token_id, ticket.day, credential)
    if not hmac.compare_digest(ticket.mac, expected):
        raise TicketError(
            "the stream ticket was not made by this server (forged, or the server's or its "
            "token's secret was rotated since): fetch the flags again for a new one"
        )
    if not today - _VALID_DAYS < ticket.day <= today:
        raise TicketError("the stream ticket has expired: fetch the flags again for a new one")
