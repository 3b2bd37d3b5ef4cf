"""Output: aligned tables for people, the API's body verbatim with ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

__all__ = ["echo_json", "fmt_percentage", "fmt_value", "table", "warn"]


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
    cells = [[str(c) if c is not None else "" for c in row] for row in rows]
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
