"""Errors of the ``flags`` command; each carries its exit code (docs/spec.md section 8).

CliError              exit_code set per instance
├── UsageProblem      2  bad input or a local file, found before any request
├── Refused           1  the server said no (not found, conflict, validation)
│   └── ApprovalNeeded 6  the flag is under an approval policy: file a change request
├── UnexpectedAnswer  1  an answer that is not Flagport's (a proxy's page, a redirect, garbage)
├── Unreachable       3  no answer from the server (the message names the URL)
├── NotAuthorized     4  401/403 or no token at all
└── NotConfirmed      5  committed, but not every live worker applied it in time
"""

from __future__ import annotations

__all__ = [
    "ApprovalNeeded",
    "CliError",
    "NotAuthorized",
    "NotConfirmed",
    "Refused",
    "UnexpectedAnswer",
    "Unreachable",
    "UsageProblem",
]


class CliError(Exception):
    """Printed as one line on stderr; the process exits with ``exit_code``."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageProblem(CliError):
    exit_code = 2


class Refused(CliError):
    exit_code = 1


class ApprovalNeeded(Refused):
    """A change that does not reduce a guarded flag's exposure, made without an approved
    change request: its own exit code, so a script can tell it from a plain refusal and
    file the request (``flags request ...``)."""

    exit_code = 6


class UnexpectedAnswer(CliError):
    exit_code = 1


class Unreachable(CliError):
    exit_code = 3


class NotAuthorized(CliError):
    exit_code = 4


class NotConfirmed(CliError):
    exit_code = 5
