"""Bucketing spec v1 (docs/spec.md section 1): the one function every language must agree on."""

from __future__ import annotations

import mmh3

__all__ = ["BUCKETS", "bucket", "hash_unit", "threshold"]

#: Buckets per flag: 0.001 % resolution.
BUCKETS = 100_000


def _utf8(text: str) -> str | bytes:
    # mmh3 5.x crashes the interpreter (SIGSEGV) on a str holding a lone surrogate, which
    # json.loads happily produces from "\ud800"; encoding first raises UnicodeEncodeError.
    return text if text.isascii() else text.encode()


def hash_unit(salt: str, unit: str | int, seed: int = 0) -> int:
    """MurmurHash3_x86_32 of ``utf8(salt + ":" + unit)`` as an unsigned 32-bit integer.

    Raises :class:`UnicodeEncodeError` if the text is not valid Unicode (lone surrogates).
    """
    return mmh3.hash(_utf8(f"{salt}:{unit}"), seed, False)


def bucket(salt: str, unit: str | int, seed: int = 0) -> int:
    """The bucket of ``unit`` for a flag salted with ``salt``: an integer in [0, 100000).

    A unit is included at percentage ``p`` when ``bucket(...) < round(p * 1000)``. An
    integer unit buckets as its decimal string.
    """
    return (mmh3.hash(_utf8(f"{salt}:{unit}"), seed, False) * BUCKETS) >> 32


def threshold(percentage: float) -> int:
    """The bucket bound for ``percentage`` (in [0, 100], at most 3 decimals)."""
    return round(percentage * 1000)
