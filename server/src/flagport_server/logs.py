"""The server's log output: one formatter for every record, Flagport's and Granian's.

Log messages carry untrusted text (request paths, token names, flag keys, store errors).
:class:`EscapingFormatter` escapes CR, LF, every other control character and terminal
escape in the formatted message, so no input can write a second, forged log line or drive
the terminal of whoever reads the log; nothing that logs needs to remember to escape.
"""

from __future__ import annotations

import logging
from typing import Any, Final

__all__ = ["EscapingFormatter", "escape", "logging_config"]

_READABLE: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: C0 and C1 controls, DEL, the Unicode line and paragraph separators and the bidirectional
#: overrides (which reorder what a terminal shows).
_ESCAPES: Final = {
    code: _READABLE.get(chr(code), f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in [
        *range(0x20),
        *range(0x7F, 0xA0),
        0x2028,
        0x2029,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
}


def escape(text: str) -> str:
    """``text`` on one line, with control characters written as escapes (``\\n``, ``\\x1b``)."""
    return text.translate(_ESCAPES)


class EscapingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose message (``msg % args``) is escaped. A traceback
    keeps its lines but each is indented and escaped, so none can pass for a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        original = record.message
        record.message = escape(original)
        try:
            return super().formatMessage(record)
        finally:
            record.message = original

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("    " + escape(line) for line in text.split("\n"))


_FORMATTER: Final = f"{EscapingFormatter.__module__}.{EscapingFormatter.__qualname__}"


def logging_config(level: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for the server process and its workers (Granian
    applies it in every worker it starts): Flagport's records (the root logger), Granian's
    own and its access log all go through :class:`EscapingFormatter`."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "flagport": {
                "()": _FORMATTER,
                "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s",
            },
            "granian": {"()": _FORMATTER, "fmt": "[%(levelname)s] %(message)s"},
            "access": {"()": _FORMATTER, "fmt": "%(message)s"},
        },
        "handlers": {
            "flagport": {"class": "logging.StreamHandler", "formatter": "flagport"},
            "granian": {
                "class": "logging.StreamHandler",
                "formatter": "granian",
                "stream": "ext://sys.stdout",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "stream": "ext://sys.stdout",
            },
        },
        "root": {"handlers": ["flagport"], "level": level},
        "loggers": {
            "_granian": {"handlers": ["granian"], "level": level, "propagate": False},
            "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
