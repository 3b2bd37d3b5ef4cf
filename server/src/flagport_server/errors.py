"""Exceptions of the ``flagport_server`` distribution. Each maps to one HTTP status in
exactly one place (``flagport_server.app``'s exception handlers).

    ServerError                      500
    ├── StoreError                   500  the store misbehaved
    │   └── StoreUnavailable         503  cannot reach the store (writes fail fast)
    ├── VersionConflict              409/412  a compare-and-set guard failed
    ├── NotFound                     404
    ├── AlreadyExists                409
    ├── Conflict                     409  e.g. deleting a parent or a segment in use
    ├── InvalidInput                 400/422  names the field (``path``)
    ├── PreconditionRequired         428  PUT without If-Match
    ├── Unauthorized                 401
    ├── Forbidden                    403
    └── RequestTimeout               408  the request body did not arrive in time (closes)
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "PreconditionRequired",
    "RequestTimeout",
    "ServerError",
    "StoreError",
    "StoreUnavailable",
    "Unauthorized",
    "VersionConflict",
]


class ServerError(Exception):
    """Base class of the server's domain errors."""

    status_code = 500
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StoreError(ServerError):
    title = "Store error"


class StoreUnavailable(StoreError):
    status_code = 503
    title = "Store unavailable"


class VersionConflict(ServerError):
    """The stored version differs from the expected one. ``actual`` is ``None`` when the
    object does not exist."""

    status_code = 409
    title = "Version conflict"

    def __init__(self, kind: str, key: str, expected: int | None, actual: int | None) -> None:
        if expected is None:
            detail = f"{kind} {key!r} already exists"
        elif actual is None:
            detail = f"{kind} {key!r} does not exist"
        else:
            detail = f"{kind} {key!r} is at version {actual}, not {expected}"
        super().__init__(detail)
        self.kind = kind
        self.key = key
        self.expected = expected
        self.actual = actual


class NotFound(ServerError):
    status_code = 404
    title = "Not found"


class AlreadyExists(ServerError):
    status_code = 409
    title = "Already exists"


class Conflict(ServerError):
    status_code = 409
    title = "Conflict"


class InvalidInput(ServerError):
    status_code = 400
    title = "Invalid input"

    def __init__(self, detail: str, path: str | None = None) -> None:
        super().__init__(detail)
        self.path = path


class PreconditionRequired(ServerError):
    status_code = 428
    title = "Precondition required"


class Unauthorized(ServerError):
    status_code = 401
    title = "Unauthorized"


class Forbidden(ServerError):
    status_code = 403
    title = "Forbidden"


class RequestTimeout(ServerError):
    """The client did not send the whole request body in time. The answer closes the
    connection: the rest of the body may still be on its way."""

    status_code = 408
    title = "Request timeout"
