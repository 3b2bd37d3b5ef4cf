"""Field rules shared by the wire models and the routes' query parameters: free text without
control characters, the reason of a change, and the integers a store can keep."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

__all__ = [
    "MAX_REASON_LENGTH",
    "MAX_REQUEST_INT",
    "PRINTABLE_PATTERN",
    "Reason",
    "explain_constraint",
]

#: Text without control characters (Unicode category Cc: C0, DEL and C1): CR and LF forge log
#: lines and audit rows, ESC and CSI drive the operator's terminal. msgspec applies a pattern
#: with ``re.search``, where ``$`` also matches before a final newline: ``(?!\n)`` refuses it.
PRINTABLE_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*$(?!\n)"
MAX_REASON_LENGTH: Final = 1000
#: The largest id or version a request may name (audit ids, snapshot versions): a larger one
#: can match nothing, and is refused (400) before it reaches a store (SQLite's INTEGER ends
#: at 2**63 - 1). 2**53 - 1: every JSON client, JavaScript's numbers included, holds it exactly.
MAX_REQUEST_INT: Final = 2**53 - 1

#: Why a change was made, kept in the audit log (the body's ``reason`` and the ``?reason=``
#: query parameter follow the same rule).
Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON_LENGTH, pattern=PRINTABLE_PATTERN)]

_PRINTABLE_MESSAGE = f"matching regex {PRINTABLE_PATTERN!r}"


def explain_constraint(message: str) -> str:
    """msgspec's message for a failed constraint, with :data:`PRINTABLE_PATTERN` in words."""
    return message.replace(_PRINTABLE_MESSAGE, "without control characters (CR, LF, tab, ESC...)")
