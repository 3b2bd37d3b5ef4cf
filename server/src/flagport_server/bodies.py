"""Request bodies: the one check of their media type, the one choice of JSON rule, and JSON
errors that say what is wrong.

A route that takes a JSON body declares a ``data`` parameter; Litestar decodes it with the
request's :meth:`~FlagportRequest.json`, which is where the media type is checked. So a new
route is covered the moment it declares its body, and a body a web page can send without a
CORS preflight (``text/plain``, forms) is never read as JSON. The one route that reads its
raw body itself (the configuration import, JSON or YAML) calls :func:`require_media_type`.

A router whose ``opt`` sets :data:`CONFIGURATION_JSON` (the admin API) has its bodies parsed
by the configuration's rule, :func:`flagport.document.parse_json`, the import's: what an
import refuses (duplicate keys, ``-0.0``...), the admin API refuses. Evaluation bodies keep
msgspec's faster decoder.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

from litestar import Request
from litestar.exceptions import SerializationException

from flagport.document import lone_surrogate, parse_json
from flagport_server.errors import InvalidInput, UnsupportedMediaType

__all__ = [
    "CONFIGURATION_JSON",
    "EMPTY_BODY",
    "JSON_MEDIA_TYPES",
    "YAML_MEDIA_TYPES",
    "FlagportRequest",
    "json_problem",
    "media_type",
    "require_media_type",
]

JSON_MEDIA_TYPES: Final = frozenset({"application/json"})
#: application/yaml is the registered type (RFC 9512); the others are still common.
YAML_MEDIA_TYPES: Final = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
_UTF8 = ("utf-8", "utf8")
#: The ``opt`` key of a router whose JSON bodies follow the configuration's rule.
CONFIGURATION_JSON: Final = "configuration_json"
EMPTY_BODY: Final = "the request body is empty: a JSON value is required"


def media_type(header: str | None, allowed: Collection[str]) -> str:
    """The media type of a ``Content-Type`` header, if it is one of ``allowed`` (with no
    parameter but an optional UTF-8 ``charset``); else :class:`UnsupportedMediaType`."""
    if header is not None and header in allowed:  # the usual case (every evaluation): quick
        return header
    expected = " or ".join(sorted(allowed))
    if header is None or not header.strip():
        raise UnsupportedMediaType(f"the request body needs Content-Type: {expected}")
    name, *parameters = header.split(";")
    name = name.strip().lower()
    if name not in allowed:
        raise UnsupportedMediaType(
            f"the request body must be {expected}, not Content-Type: {header.strip()!r}"
        )
    for parameter in parameters:
        attribute, _, value = parameter.partition("=")
        attribute = attribute.strip().lower()
        if not attribute:
            continue
        if attribute != "charset" or value.strip().strip('"').lower() not in _UTF8:
            raise UnsupportedMediaType(
                f"the request body must be {expected} (UTF-8; charset=utf-8 is the only "
                f"parameter), not Content-Type: {header.strip()!r}"
            )
    return name


def _content_type(request: Request[Any, Any, Any]) -> str | None:
    # The raw ASGI headers: this runs on every evaluation, where building Litestar's header
    # mapping would cost more than the check itself.
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            return value.decode("latin-1")
    return None


def require_media_type(request: Request[Any, Any, Any], allowed: Collection[str]) -> str:
    """:func:`media_type` of ``request``'s body."""
    return media_type(_content_type(request), allowed)


def json_problem(body: bytes, error: str) -> str:
    """What is wrong with a body msgspec could not decode (its own words, "Input data was
    truncated", are also what it says of an empty body and of a lone surrogate)."""
    if not body.strip():
        return EMPTY_BODY
    escape = lone_surrogate(body.decode("utf-8", "replace")) if b"\\u" in body else None
    if escape is not None:
        return (
            f"the request body is not valid JSON: {escape} is a lone UTF-16 surrogate "
            "(half of a pair), not a character"
        )
    if error == "Input data was truncated":
        return "the request body is not valid JSON: it ends before the JSON value does"
    return f"the request body is not valid JSON: {error}"


class FlagportRequest(Request[Any, Any, Any]):
    """The app's request class: a JSON body is read only when it is declared as JSON."""

    #: The body parsed by the configuration's rule (set on first use: no cost elsewhere).
    _configuration: Any = None

    async def json(self) -> Any:
        require_media_type(self, JSON_MEDIA_TYPES)
        if not self.route_handler.opt.get(CONFIGURATION_JSON):
            try:
                return await super().json()
            except SerializationException as error:
                raise InvalidInput(json_problem(await self.body(), str(error))) from None
        if self._configuration is None:
            body = await self.body()
            if not body.strip():
                raise InvalidInput(EMPTY_BODY)
            self._configuration = (parse_json(body),)
        return self._configuration[0]
