"""The evaluation surface: the routes a browser, or anyone holding an ``evaluate`` token, may
call (docs/spec.md sections 5 and 12). One list, read by CORS and by the rate limits; both
are wrappers outside the app, so they match paths rather than Litestar routes, and answer
some requests themselves (:func:`send_answer`)."""

from __future__ import annotations

from typing import Final

from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Send

__all__ = ["evaluation_surface_method", "send_answer"]

_OFREP_BULK: Final = "/ofrep/v1/evaluate/flags"
_OFREP_SINGLE: Final = "/ofrep/v1/evaluate/flags/"
_GET_EVALUATE: Final = "/v1/evaluate/"
_STREAM: Final = "/v1/stream"


def evaluation_surface_method(path: str) -> str | None:
    """The method a route of the evaluation surface takes, or None: not on the surface.

    OFREP single and bulk (POST), ``GET /v1/evaluate/{key}`` and the change stream (GET).
    """
    if path == _OFREP_BULK or (path.startswith(_OFREP_SINGLE) and len(path) > len(_OFREP_SINGLE)):
        return "POST"
    if (path.startswith(_GET_EVALUATE) and len(path) > len(_GET_EVALUATE)) or path == _STREAM:
        return "GET"
    return None


async def send_answer(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Send a whole answer from a wrapper, before the app (``Content-Length`` added)."""
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)
