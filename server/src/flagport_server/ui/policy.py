"""The admin UI's response policy: the headers every UI answer carries, error pages included
(:mod:`flagport_server.http_errors` adds them to the pages it renders)."""

from __future__ import annotations

from typing import Final

__all__ = ["CSP", "SECURITY_HEADERS"]

#: No request to another origin, no inline script or style, no framing, forms post here only.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
