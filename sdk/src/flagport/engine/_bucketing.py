"""Bucketing spec v1 (docs/spec.md section 1): the one function every language must agree on."""

from __future__ import annotations

import mmh3

__all__ = [
    "BUCKETS",
    "bucket",
    "bucket_of_hash",
    "first_hash_at",
    "hash_unit",
    "point_of_hash",
    "threshold",
]

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
    return point_of_hash(mmh3.hash(_utf8(f"{salt}:{unit}"), seed, False), BUCKETS)


def point_of_hash(hashed: int, total: int) -> int:
    """Where an unsigned 32-bit hash falls among ``total`` equal slots: ``hash * total / 2**32``
    rounded down, in [0, total). The one expression of bucketing spec v1: a unit's bucket is
    ``point_of_hash(seed-0 hash, BUCKETS)``, its point among the weights
    ``point_of_hash(seed-1 hash, total weight)``."""
    return (hashed * total) >> 32


def bucket_of_hash(hashed: int) -> int:
    """The bucket in [0, 100000) of a unit whose seed-0 hash is ``hashed``."""
    return point_of_hash(hashed, BUCKETS)


def first_hash_at(point: int, total: int = BUCKETS) -> int:
    """The smallest hash whose :func:`point_of_hash` (of ``total``) is ``point`` or more, so
    ``point_of_hash(h, total) < point`` exactly when ``h < first_hash_at(point, total)``.
    The evaluators compare a unit's hash with bounds computed once per flag instead of
    computing its point per evaluation; ``2**32`` (no hash) for ``point == total``."""
    return -(-(point << 32) // total)


def threshold(percentage: float) -> int:
    """The bucket bound for ``percentage`` (in [0, 100], at most 3 decimals)."""
    return round(percentage * 1000)
