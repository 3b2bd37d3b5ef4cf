"""Output: aligned tables for people, the API's body verbatim with ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

__all__ = ["echo_json", "fmt_percentage", "fmt_value", "printable", "table", "warn"]

_READABLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: C0 and C1 controls, DEL, the Unicode line and paragraph separators and the bidirectional
#: overrides (which reorder what a terminal shows).
_ESCAPES = {
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


def printable(value: Any) -> str:
    """``value`` as text that stays on its line and cannot drive the terminal: names,
    reasons and descriptions come from whoever could write them (a token's holder), and a
    CR, LF or escape sequence in them would forge rows or rewrite the screen. Every table
    renders its cells through this."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return text.translate(_ESCAPES)


def echo_json(body: Any) -> None:
    """Print an API body as JSON (already-decoded bodies are re-encoded compactly sorted)."""
    if isinstance(body, bytes | str):
        text = body.decode() if isinstance(body, bytes) else body
        click.echo(text.rstrip("\n"))
    else:
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def fmt_percentage(value: Any) -> str:
    if isinstance(value, int | float):
        text = f"{float(value):.3f}".rstrip("0").rstrip(".")
        return f"{text} %"
    return "-"


def fmt_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, max_last: int = 60) -> None:
    """An aligned plain-text table; the last column is truncated on a terminal."""
    cells = [[printable(c) for c in row] for row in rows]
    if cells and sys.stdout.isatty():
        for row in cells:
            row[-1] = _truncate(row[-1], max_last)
    widths = [len(h) for h in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = [list(headers), *cells]
    for index, row in enumerate(lines):
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        click.echo(click.style(text, bold=True) if index == 0 and sys.stdout.isatty() else text)
