"""Rules every part of the engine shares: the key grammar, percentages, where a flag sits in
a document, what a bucketing unit is, and when a flag's values alone say whether it is on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from flagport._exceptions import InvalidDocumentError
from flagport.engine._bucketing import threshold
from flagport.engine._conditions import int_text
from flagport.engine.models import KEY_PATTERN, MAX_KEY_LENGTH, EvaluationResult

__all__ = [
    "Context",
    "Memo",
    "check_percentage",
    "flag_path",
    "unit_text",
    "valid_utf8",
    "validate_key",
    "values_say_on",
]

Context = Mapping[str, Any]
#: Results already computed in one evaluation, by flag key (each gate is evaluated once).
Memo = dict[str, EvaluationResult]

_KEY_RE = re.compile(KEY_PATTERN)


def valid_utf8(text: str) -> bool:
    """False for strings holding lone surrogates (not encodable, and fatal to mmh3)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def flag_path(key: str) -> str:
    return f'$.flags["{key}"]'


def validate_key(key: Any, path: str) -> str:
    """Check the key grammar: dot-separated ``[a-z0-9][a-z0-9_-]*``, at most 200 characters."""
    if type(key) is not str:
        raise InvalidDocumentError("a key must be a string", path)
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidDocumentError(
            f"key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}", path
        )
    if not _KEY_RE.fullmatch(key):  # not match(): `$` also matches before a final newline
        raise InvalidDocumentError(
            f"invalid key {key!r}: use dot-separated segments of lowercase letters, digits, "
            "'-' and '_', each starting with a letter or digit",
            path,
        )
    return key


def check_percentage(value: float, path: str) -> int:
    """The bucket bound of a percentage in [0, 100] with at most 3 decimals."""
    if not (0 <= value <= 100) or math.isnan(value):
        raise InvalidDocumentError(f"percentage must be between 0 and 100, got {value!r}", path)
    scaled = value * 1000
    if abs(scaled - round(scaled)) > 1e-6:
        raise InvalidDocumentError(f"percentage {value!r} has more than 3 decimals", path)
    return threshold(value)


def unit_text(unit: Any) -> str | bool | None:
    """The bucketing unit as text; ``None`` when missing (absent or ``""``), ``False`` when
    invalid (not a string or an integer, an integer too long to print, lone surrogates)."""
    kind = type(unit)
    if kind is str:
        if not unit:
            return None
        return unit if valid_utf8(unit) else False
    if kind is int:
        text = int_text(unit)
        return False if text is None else text
    if unit is None:
        return None
    return False


def values_say_on(variants: Mapping[str, Any], off_variant: str) -> bool:
    """Whether a flag's values alone say whether it is on: every value is ``true`` except
    the off variant's ``false`` (plain on/off flags). The results of any other flag carry
    ``metadata.on``, so that clients need not know the flag's off variant."""
    return all(value is (name != off_variant) for name, value in variants.items())
