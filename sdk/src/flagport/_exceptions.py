"""Exceptions raised by the Flagport SDK.

Evaluation never raises into the application: these are raised only by explicit
operations such as loading or validating a snapshot document, or misusing the API.

    FlagportError
    ├── InvalidDocumentError     a snapshot document (or part of one) is invalid;
    │                            ``.path`` names the offending field (``$.flags["a.b"].percentage``)
    └── ClientError              raised by client construction/usage, never by evaluation
"""

from __future__ import annotations

__all__ = ["PATH_MARKER", "ClientError", "FlagportError", "InvalidDocumentError"]

#: What separates a problem from where it is, in msgspec's validation messages and in
#: ``str(InvalidDocumentError)``: ``"Expected `int` - at `$.a[0]`"``
#: (read back by ``flagport.engine.split_validation_message``).
PATH_MARKER = " - at `"


class FlagportError(Exception):
    """Base class of every exception the ``flagport`` distribution raises."""


class InvalidDocumentError(FlagportError, ValueError):
    """A snapshot document, flag, rule or segment is invalid.

    ``path`` is a JSONPath-like location (``$.flags["a.b"].percentage``) and ``problem``
    the human-readable reason; ``str(error)`` combines both.
    """

    def __init__(self, problem: str, path: str = "$") -> None:
        self.problem = problem
        self.path = path
        super().__init__(f"{problem}{PATH_MARKER}{path}`")


class ClientError(FlagportError):
    """A client was misconfigured or misused (bad URL, closed client, ...)."""
