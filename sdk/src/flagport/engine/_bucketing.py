"""Bucketing spec v1 (DESIGN.md section 2): the one function every language must agree on."""

from __future__ import annotations

import mmh3

__all__ = ["BUCKETS", "bucket", "hash_unit", "threshold"]

#: Buckets per flag: 0.001 % resolution.
BUCKETS = 100_000


def hash_unit(salt: str, unit: str, seed: int = 0) -> int:
    """MurmurHash3_x86_32 of ``utf8(salt + ":" + unit)`` as an unsigned 32-bit integer."""
    return mmh3.hash(f"{salt}:{unit}", seed, False)  # type: ignore[no-any-return]


def bucket(salt: str, unit: str, seed: int = 0) -> int:
    """The bucket of ``unit`` for a flag salted with ``salt``: an integer in [0, 100000).

    A unit is included at percentage ``p`` when ``bucket(...) < round(p * 1000)``.
    """
    return (mmh3.hash(f"{salt}:{unit}", seed, False) * BUCKETS) >> 32  # type: ignore[no-any-return]


def threshold(percentage: float) -> int:
    """The bucket bound for ``percentage`` (in [0, 100], at most 3 decimals)."""
    return round(percentage * 1000)
