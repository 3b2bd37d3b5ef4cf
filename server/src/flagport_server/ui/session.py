"""The admin UI's session cookie and CSRF tokens (docs/adr/0026-admin-ui.md).

A session is ``<token id>.<expiry>.<mac>``: the expiry in seconds since the epoch and the mac
an HMAC-SHA256, keyed by the store's server secret (the key of the stream tickets,
:mod:`flagport_server.tickets`), of both and of the token's credential (the hash of the
secret it signed in with). The cookie proves only that a holder of that secret signed in
before the expiry; whether the token is still valid (not revoked) and which scope it has is
read from the live tokens on every request, and the mac is checked against the token's
credential of now: revoking a token or rotating its secret (or the bootstrap token) ends its
sessions, and rotating the server secret ends every session.

A CSRF token is the HMAC of what the form is bound to: the session cookie's value once signed
in, and before that a random pre-session nonce kept in its own cookie (a double submit), so a
page on another site can neither read nor make one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Final, NamedTuple

__all__ = [
    "MAX_COOKIE_LENGTH",
    "PRESESSION_COOKIE",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "Session",
    "SessionError",
    "check_session",
    "csrf_matches",
    "csrf_token",
    "mint_session",
    "new_nonce",
    "read_session",
]

#: The session cookie, and the sign-in form's pre-session nonce cookie.
SESSION_COOKIE: Final = "fp_session"
PRESESSION_COOKIE: Final = "fp_presession"
#: How long a sign-in lasts (a night's release and then some).
SESSION_SECONDS: Final = 12 * 3600
#: A cookie value is short; a longer one is refused before anything is computed.
MAX_COOKIE_LENGTH: Final = 160
_MAC_BYTES: Final = 18  # 144 bits, 24 characters of base64url
_SESSION = re.compile(r"([0-9A-Za-z_-]{1,64})\.(\d{1,12})\.([0-9A-Za-z_-]{24})")
_NONCE = re.compile(r"[0-9A-Za-z_-]{22,64}")


class SessionError(ValueError):
    """A session cookie that does not sign anyone in; the message says why."""


class Session(NamedTuple):
    """A session cookie's parts, read but not yet checked (:func:`check_session`)."""

    token_id: str
    expires: int
    mac: str


def _mac(secret: bytes, purpose: str, *parts: object) -> str:
    text = "|".join([purpose, *(str(part) for part in parts)])
    digest = hmac.new(secret, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:_MAC_BYTES]).decode()


def mint_session(secret: bytes, token_id: str, expires: int, credential: str) -> str:
    """The session cookie value of token ``token_id`` signed in with the secret whose
    credential is ``credential``, valid until ``expires``."""
    return f"{token_id}.{expires}.{_mac(secret, 'ui-session', token_id, expires, credential)}"


def read_session(value: str) -> Session:
    """The parts of the session cookie ``value`` (which token to look up before
    :func:`check_session`); :class:`SessionError` if it is not shaped as one."""
    if len(value) > MAX_COOKIE_LENGTH:
        raise SessionError("the session is not one this server makes")
    match = _SESSION.fullmatch(value)
    if match is None:
        raise SessionError("the session is not one this server makes")
    token_id, expires_text, mac = match.groups()
    return Session(token_id, int(expires_text), mac)


def check_session(secret: bytes, session: Session, credential: str, now: float) -> None:
    """Whether ``session`` was made by this server for its token's ``credential`` of now
    and has not expired; :class:`SessionError` saying why not."""
    expected = _mac(secret, "ui-session", session.token_id, session.expires, credential)
    if not hmac.compare_digest(session.mac, expected):
        raise SessionError(
            "the session was not made by this server, or its token's secret was rotated since"
        )
    if now >= session.expires:
        raise SessionError("the session has expired")


def new_nonce() -> str:
    """A pre-session nonce: what the sign-in form's CSRF token is bound to."""
    return secrets.token_urlsafe(24)


def csrf_token(secret: bytes, binding: str) -> str:
    """The CSRF token of forms bound to ``binding`` (a session or a pre-session nonce)."""
    return _mac(secret, "ui-csrf", binding)


def csrf_matches(secret: bytes, binding: str | None, presented: str | None) -> bool:
    """Whether ``presented`` is the CSRF token of ``binding`` (both must be there)."""
    if not binding or not presented or len(presented) > MAX_COOKIE_LENGTH:
        return False
    if not (_SESSION.fullmatch(binding) or _NONCE.fullmatch(binding)):
        return False
    return hmac.compare_digest(presented, csrf_token(secret, binding))
