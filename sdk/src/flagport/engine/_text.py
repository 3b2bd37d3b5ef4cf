"""How much of a context string conditions read, and ``contains`` over many values.

No context may cost more than a bounded amount of work per condition value. A context
string (up to the 64 KiB of an evaluation body) is therefore read at most
:data:`MAX_MATCHED_LENGTH` characters deep (the rule itself is written in ``_conditions``),
and ``contains`` with many values, or many ``contains`` conditions on one string, do not
scan the string once per value: :class:`Needles` looks up the string's 4-character pieces
in an index of the values instead, built once per condition, while the string's pieces are
listed once per string and shared by every condition that reads it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_MATCHED_LENGTH", "Needles"]

#: The characters of a context string that string operators read: ``starts_with`` and
#: ``contains`` its first 1,024, ``ends_with`` its last 1,024.
MAX_MATCHED_LENGTH = 1024

#: Length of the pieces the index is keyed by.
_PIECE = 4
#: Strings up to this long are scanned for each value: cheaper than listing their pieces.
_SCAN_LENGTH = 64
#: A longer string is scanned for this many values (over all conditions) before its
#: pieces are listed: listing 1,024 characters costs about as much as scanning them for
#: a hundred values.
_SCAN_VALUES = 64
#: Strings whose pieces are kept (the most recent; cleared when full).
_SEEN_SIZE = 32


class _Seen:
    """A context string's first characters, how many values were scanned for in them and,
    past :data:`_SCAN_VALUES`, their pieces. Shared through :data:`_SEEN` by every
    condition that reads the same string (an evaluation of every flag reads it many times).
    """

    __slots__ = ("pieces", "positions", "scanned", "shorter", "text")

    def __init__(self, text: str) -> None:
        self.text = text[:MAX_MATCHED_LENGTH]
        self.scanned = 0
        self.pieces: frozenset[str] | None = None
        self.positions: dict[str, list[int]] = {}
        self.shorter: dict[int, frozenset[str]] = {}

    def list_pieces(self) -> frozenset[str]:
        text = self.text
        pieces = frozenset([text[i : i + _PIECE] for i in range(len(text) - _PIECE + 1)])
        self.pieces = pieces
        return pieces

    def starts(self, piece: str) -> list[int]:
        """Where ``piece`` starts in the text."""
        found = self.positions.get(piece)
        if found is None:
            found = []
            text = self.text
            at = text.find(piece)
            while at >= 0:
                found.append(at)
                at = text.find(piece, at + 1)
            self.positions[piece] = found
        return found

    def substrings(self, length: int) -> frozenset[str]:
        """Every substring of ``length`` (< the piece length) of the text."""
        found = self.shorter.get(length)
        if found is None:
            text = self.text
            found = frozenset([text[i : i + length] for i in range(len(text) - length + 1)])
            self.shorter[length] = found
        return found


#: Context strings seen last, by the string itself (its hash is computed once per string).
_SEEN: dict[str, _Seen] = {}


def _seen(text: str) -> _Seen:
    seen = _SEEN.get(text)
    if seen is None:
        if len(_SEEN) >= _SEEN_SIZE:
            _SEEN.clear()  # bounded; a cleared entry only costs listing the pieces again
        seen = _SEEN[text] = _Seen(text)
    return seen


class Needles:
    """The values of one ``contains`` condition, ready to be looked for in context
    strings: each value of :data:`_PIECE` characters or more is indexed by one of its
    pieces (the one shared with the fewest other values, of its first, middle and last),
    the shorter ones by length."""

    __slots__ = ("anchored", "count", "shorter", "values")

    def __init__(self, values: Iterable[str]) -> None:
        # Longer values cannot be in the part of a string that is read.
        self.values = tuple(dict.fromkeys(v for v in values if len(v) <= MAX_MATCHED_LENGTH))
        self.count = len(self.values)
        anchored: dict[str, list[tuple[int, str]]] = {}
        shorter: dict[int, set[str]] = {}
        for value in self.values:
            if len(value) < _PIECE:
                shorter.setdefault(len(value), set()).add(value)
                continue
            best_offset, best = 0, anchored.setdefault(value[:_PIECE], [])
            for offset in ((len(value) - _PIECE) // 2, len(value) - _PIECE):
                shared = anchored.setdefault(value[offset : offset + _PIECE], [])
                if len(shared) < len(best):
                    best_offset, best = offset, shared
            best.append((best_offset, value))
        # Pieces considered but chosen by no value.
        self.anchored = {piece: found for piece, found in anchored.items() if found}
        self.shorter = tuple((length, frozenset(found)) for length, found in shorter.items())

    def found_in(self, text: str) -> bool:
        """Whether one of the values is in the first :data:`MAX_MATCHED_LENGTH` characters
        of ``text``."""
        if len(text) <= _SCAN_LENGTH:
            for value in self.values:  # noqa: SIM110 - cheaper than any() + a generator
                if value in text:
                    return True
            return False
        seen = _SEEN.get(text) or _seen(text)
        pieces = seen.pieces
        if pieces is None:
            seen.scanned += self.count
            if seen.scanned <= _SCAN_VALUES:
                within = seen.text
                for value in self.values:  # noqa: SIM110
                    if value in within:
                        return True
                return False
            pieces = seen.list_pieces()
        for length, values in self.shorter:
            if length == 0 or not values.isdisjoint(seen.substrings(length)):
                return True
        anchored = self.anchored
        if len(anchored) > len(pieces):
            found = [piece for piece in pieces if piece in anchored]
        else:
            found = [piece for piece in anchored if piece in pieces]
        within = seen.text
        for piece in found:
            starts = seen.starts(piece)
            for offset, value in anchored[piece]:
                for at in starts:
                    if at >= offset and within.startswith(value, at - offset):
                        return True
        return False
