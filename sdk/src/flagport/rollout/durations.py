"""Durations of the rollout grammar and options: ``90s``, ``30m``, ``1h``, ``7d``, ``2w`` or
combinations such as ``1h30m`` (the same spelling as ``flags stats --since``). One parser for
guard windows, ``--hold``, ``--max-hold`` and ``--health-interval``."""

from __future__ import annotations

from typing import Final

from flagport.durations import duration_seconds
from flagport.rollout.errors import DurationError

__all__ = ["MAX_DURATION_SECONDS", "format_duration", "parse_duration"]

#: The longest duration anything in a plan may name: a year.
MAX_DURATION_SECONDS: Final = 366 * 86400
#: A duration's text is short; a longer one is refused before it is read.
_MAX_TEXT = 40
#: The units :func:`format_duration` writes, largest first (weeks are read, never written).
_WRITTEN_UNITS: Final = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_duration(text: str) -> int:
    """The whole seconds ``text`` spells (read by :func:`flagport.durations.duration_seconds`,
    the one reading of durations); :class:`DurationError` if it is no duration or is longer
    than :data:`MAX_DURATION_SECONDS`. Zero (``0m``) is a duration: callers that need a
    positive one say so."""
    if len(text) > _MAX_TEXT:
        raise DurationError(
            f"invalid duration {text[:_MAX_TEXT]!r}...: use e.g. 30s, 5m, 1h, 1h30m"
        )
    seconds = duration_seconds(text)
    if seconds is None:
        raise DurationError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h, 1h30m")
    if seconds > MAX_DURATION_SECONDS:
        raise DurationError(f"duration {text!r} is too long: at most 366d")
    return seconds


def format_duration(seconds: int) -> str:
    """The canonical spelling of ``seconds`` (``5400`` -> ``1h30m``, ``0`` -> ``0s``), which
    :func:`parse_duration` reads back to the same number. Weeks are not used: ``14d``."""
    if seconds < 0:
        raise DurationError(f"a duration is not negative, got {seconds} s")
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in _WRITTEN_UNITS:
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
