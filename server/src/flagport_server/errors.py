"""Exceptions of the ``flagport_server`` distribution. Each is raised where the problem is
found and carries its HTTP status; :mod:`flagport_server.http_errors` is the one place that
turns them into answers (a problem document, or an OFREP error on the evaluation routes).

    ServerError                      500
    ├── StoreError                   500  the store misbehaved
    │   └── StoreUnavailable         503  cannot reach the store (writes fail fast)
    ├── VersionConflict              409  a compare-and-set guard failed
    │   └── PreconditionFailed       412  the version If-Match named is not the stored one
    ├── NotFound                     404
    ├── AlreadyExists                409
    ├── Conflict                     409  e.g. deleting a parent or a segment in use
    │   ├── UnreadableRecord         409  the stored flag/segment cannot be decoded
    │   └── ApprovalRequired         409  a change to a flag under an approval policy that
    │                                     does not reduce its exposure: file a request
    ├── InvalidInput                 400  names the field (``path``); an engine
    │                                     InvalidDocumentError becomes one (from_document)
    ├── UnsupportedMediaType         415  a body that is not JSON (400 INVALID_CONTEXT on OFREP)
    ├── PreconditionRequired         428  PUT without If-Match
    ├── Unauthorized                 401  with WWW-Authenticate
    │   └── SignInNeeded             (the admin UI: its sign-in page)
    ├── Forbidden                    403
    ├── RequestTimeout               408  the request body did not arrive in time (closes)
    └── TooManyRequests              429  with Retry-After
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from flagport import InvalidDocumentError

__all__ = [
    "AlreadyExists",
    "ApprovalRequired",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "MisdirectedRequest",
    "NotFound",
    "PreconditionFailed",
    "PreconditionRequired",
    "RequestTimeout",
    "ServerError",
    "SignInNeeded",
    "StoreError",
    "StoreNotEmpty",
    "StoreUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnreadableRecord",
    "UnsupportedMediaType",
    "VersionConflict",
    "document_errors_as_input",
]


class ServerError(Exception):
    """Base class of the server's domain errors."""

    status_code = 500
    title = "Internal error"
    #: Headers the HTTP answer carries.
    headers: Mapping[str, str] = MappingProxyType({})

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


class PreconditionFailed(VersionConflict):
    """A conditional write (``If-Match``) found another version than the one it named."""

    status_code = 412


class NotFound(ServerError):
    status_code = 404
    title = "Not found"


class AlreadyExists(ServerError):
    status_code = 409
    title = "Already exists"


class Conflict(ServerError):
    status_code = 409
    title = "Conflict"


class UnreadableRecord(Conflict):
    """A change to a stored flag or segment that cannot be decoded: only deleting it or
    importing a configuration that replaces it can repair it."""

    title = "Unreadable stored record"

    def __init__(self, kind: str, key: str, why: str) -> None:
        super().__init__(
            f"stored {kind} {key!r} cannot be read ({why}); repair it with "
            f"`flags delete {key}` (DELETE) or `flags import` of a configuration that has it"
            if kind == "flag"
            else f"stored {kind} {key!r} cannot be read ({why}); repair it with "
            f"a PUT of the segment or `flags import` of a configuration that has it"
        )
        self.kind = kind
        self.key = key


class ApprovalRequired(Conflict):
    """A change that does not reduce the exposure of a flag under an approval policy, made
    without an approved change request (docs/spec.md, "Approvals"): nothing changed."""

    title = "Approval required"


class StoreNotEmpty(Conflict):
    """A restore into a store that already holds a configuration, without ``--replace``."""

    title = "Store not empty"

    def __init__(self, held: str) -> None:
        super().__init__(
            f"the store is not empty ({held}): restore into an empty store, or pass "
            "--replace to overwrite everything it holds"
        )


class InvalidInput(ServerError):
    status_code = 400
    title = "Invalid input"

    def __init__(self, detail: str, path: str | None = None) -> None:
        super().__init__(detail)
        self.path = path

    @classmethod
    def from_document(cls, error: InvalidDocumentError) -> InvalidInput:
        """The engine's refusal of a document, flag or segment, as the input it refuses
        (its problem and the field it names)."""
        return cls(error.problem, error.path)


@contextlib.contextmanager
def document_errors_as_input() -> Iterator[None]:
    """Raise the engine's :class:`InvalidDocumentError` of the block as :class:`InvalidInput`
    (the one translation of document errors into the server's errors)."""
    try:
        yield
    except InvalidDocumentError as error:
        raise InvalidInput.from_document(error) from None


class UnsupportedMediaType(ServerError):
    """A request body sent with a ``Content-Type`` the route does not read."""

    status_code = 415
    title = "Unsupported media type"


class PreconditionRequired(ServerError):
    status_code = 428
    title = "Precondition required"


class Unauthorized(ServerError):
    status_code = 401
    title = "Unauthorized"
    #: RFC 9110: a 401 names the scheme that would work (RFC 6750's bearer token).
    headers = MappingProxyType({"WWW-Authenticate": 'Bearer realm="flagport"'})


class Forbidden(ServerError):
    status_code = 403
    title = "Forbidden"


class SignInNeeded(Unauthorized):
    """An admin UI page asked for without a valid session (none, expired, forged, or its token
    revoked): the UI answers with the sign-in page, which then returns to ``next_path``."""

    def __init__(self, detail: str, next_path: str) -> None:
        super().__init__(detail)
        self.next_path = next_path


class MisdirectedRequest(ServerError):
    """A request without a token that names another host than this loopback server's
    (DNS rebinding; :mod:`flagport_server.host_check`)."""

    status_code = 421
    title = "Misdirected request"


class RequestTimeout(ServerError):
    """The client did not send the whole request body in time. The answer closes the
    connection: the rest of the body may still be on its way."""

    status_code = 408
    title = "Request timeout"
    headers = MappingProxyType({"Connection": "close"})


class TooManyRequests(ServerError):
    """Too many failed token checks from one client address: retry after ``retry_after``
    seconds."""

    status_code = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}
