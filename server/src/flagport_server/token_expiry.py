"""When a token stops working, the one reading of it (docs/spec.md section 5, "Personal
tokens"): the served snapshot precomputes each token's expiry as a number with
:func:`expiry_of`, so the check on every request is a dict lookup and a comparison; the
admin API, the CLI's ``token list`` and the warning header read :func:`token_status`.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

from flagport_server.stores.base import TokenRecord

__all__ = [
    "TOKEN_EXPIRES_HEADER",
    "TOKEN_EXPIRY_WARNING_S",
    "TokenStatus",
    "expires_at_text",
    "expiry_of",
    "token_status",
]

#: A token this close to its expiry is ``expiring``: ``token list`` says so, and every admin
#: answer to it carries :data:`TOKEN_EXPIRES_HEADER` (the CLI prints a warning on stderr).
TOKEN_EXPIRY_WARNING_S: Final = 7 * 86400
#: The header naming the expiry of the token a request used, while it is ``expiring``.
TOKEN_EXPIRES_HEADER: Final = "X-Flagport-Token-Expires"

TokenStatus = Literal["revoked", "expired", "expiring"]


def expiry_of(token: TokenRecord) -> float | None:
    """Seconds since the epoch at which ``token`` stops working; ``None``: never. A stored
    expiry that cannot be read counts as passed: a token must never outlive its expiry
    because a newer release wrote it differently."""
    if token.expires_at is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(token.expires_at)
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def token_status(token: TokenRecord, now: float) -> TokenStatus | None:
    """``revoked``, ``expired``, ``expiring`` (within :data:`TOKEN_EXPIRY_WARNING_S`), or
    ``None`` for a valid token that is not near its expiry."""
    if token.revoked_at is not None:
        return "revoked"
    expiry = expiry_of(token)
    if expiry is None:
        return None
    if now >= expiry:
        return "expired"
    return "expiring" if expiry - now <= TOKEN_EXPIRY_WARNING_S else None


def expires_at_text(now: float, seconds: int) -> str:
    """The ``expires_at`` of a token made (or rotated) at ``now`` to live ``seconds``."""
    moment = dt.datetime.fromtimestamp(now + seconds, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
