"""Baselines for the server benchmarks (issue 3).

``app``: a bare Litestar app on the same runner (no middleware, ``openapi_config=None``,
``debug=False``) whose POST handler decodes the same body with msgspec and returns a constant.
``raw_app``: a framework-free ASGI app doing the same decode/encode (the stretch figure).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request, get, post


class Body(msgspec.Struct):
    context: dict[str, Any]


_CONSTANT = b'{"key":"bench","reason":"STATIC","variant":"on","value":true}'
_decoder = msgspec.json.Decoder(Body)


@post("/bare", status_code=200)
async def bare_post(request: Request[Any, Any, Any]) -> bytes:
    _decoder.decode(await request.body())
    return _CONSTANT


@get("/bare")
async def bare_get() -> bytes:
    return _CONSTANT


app = Litestar(route_handlers=[bare_post, bare_get], openapi_config=None, debug=False)


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Plain ASGI: read the body, decode it, answer the constant."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        _decoder.decode(body)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": _CONSTANT})
