"""Field rules shared by the wire models and the routes' query parameters: free text without
control characters, the reason of a change, and the integers a store can keep."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from flagport.engine import MAX_REASON_LENGTH, PRINTABLE_PATTERN, split_validation_message

__all__ = [
    "MAX_REASON_LENGTH",
    "MAX_REQUEST_INT",
    "PRINTABLE_PATTERN",
    "TOKEN_NAME_PATTERN",
    "Reason",
    "explain_constraint",
    "validation_problem",
]

# PRINTABLE_PATTERN (text without control characters) and MAX_REASON_LENGTH are the stored
# text rules of the engine's limits, so a reason is refused in a request exactly as a commit
# would refuse it.
#: The largest id or version a request may name (audit ids, snapshot versions): a larger one
#: can match nothing, and is refused (400) before it reaches a store (SQLite's INTEGER ends
#: at 2**63 - 1). 2**53 - 1: every JSON client, JavaScript's numbers included, holds it exactly.
MAX_REQUEST_INT: Final = 2**53 - 1

#: Why a change was made, kept in the audit log (the body's ``reason`` and the ``?reason=``
#: query parameter follow the same rule).
Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON_LENGTH, pattern=PRINTABLE_PATTERN)]

#: A token's name is its audit actor: printable, no spaces, unique (case-insensitively).
#: ``(?!\n)``: msgspec's ``re.search`` lets ``$`` match before a final newline.
TOKEN_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$(?!\n)"

#: The patterns above in words, for error messages (msgspec quotes the regex).
_IN_WORDS: Final = {
    PRINTABLE_PATTERN: "without control characters (CR, LF, tab, ESC...)",
    TOKEN_NAME_PATTERN: "of 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter "
    "or a digit",
}


def explain_constraint(message: str) -> str:
    """msgspec's message for a failed constraint, with the patterns in words."""
    for pattern, words in _IN_WORDS.items():
        message = message.replace(f"matching regex {pattern!r}", words)
    return message


def validation_problem(message: str) -> tuple[str, str | None]:
    """msgspec's validation message split into what is wrong (in words) and where (the field
    an HTTP problem names; ``None``: the value itself), read by the one reader of msgspec's
    wording, :func:`flagport.engine.split_validation_message`."""
    problem, where = split_validation_message(message)
    return explain_constraint(problem), where or None
