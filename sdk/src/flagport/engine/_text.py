"""How much of a context string conditions read, and ``contains`` over many values.

No context may cost more than a bounded amount of work per condition value. A context
string (up to the 64 KiB of an evaluation body) is therefore read at most
:data:`MAX_MATCHED_LENGTH` characters deep (the rule itself is written in ``_conditions``),
and ``contains`` does not scan a long string once per value: :class:`Needles` looks the
values up in the set of the string's short byte sequences instead. That set is built once
per string, by C code (slices of a buffer viewed as integers), and shared by every condition
that reads the string, so its cost does not grow with the number of values or conditions.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_MATCHED_LENGTH", "Needles"]

#: The characters of a context string that string operators read: ``starts_with`` and
#: ``contains`` its first 1,024, ``ends_with`` its last 1,024.
MAX_MATCHED_LENGTH = 1024

#: Bytes of a window: the byte sequences of this length (and the shorter values) are the
#: integers of a buffer viewed as unsigned 32-bit words (``"I"`` is 4 bytes wherever
#: CPython runs).
_WORD = 4
#: Strings up to this long are scanned for each value: cheaper than listing their windows.
_SCAN_LENGTH = 64
#: A longer string is scanned for this many values (over all conditions) before its
#: windows are listed: listing a kilobyte costs about as much as scanning it for 30 values.
_SCAN_VALUES = 32
#: Characters of the strings whose windows are kept (a context's worth; cleared when full).
_SEEN_CHARACTERS = 128 * 1024


def _word(chunk: bytes) -> int:
    """The integer of up to 4 bytes as a window of them reads (zero-padded, native order)."""
    return memoryview(chunk.ljust(_WORD, b"\0")).cast("I")[0]


class _Seen:
    """A context string's first characters, how many values were scanned for in them, and
    the windows of their UTF-8 bytes, listed on demand. Shared through :data:`_SEEN` by
    every condition that reads the same string (an evaluation of every flag reads it many
    times)."""

    __slots__ = ("data", "positions", "scanned", "text", "windows")

    def __init__(self, text: str) -> None:
        self.text = text[:MAX_MATCHED_LENGTH]
        self.scanned = 0
        # Lone surrogates (valid in a Python string) encode like any other character.
        self.data = self.text.encode("utf-8", "surrogatepass")
        self.windows: dict[int, frozenset[int]] = {}
        self.positions: dict[bytes, list[int]] = {}

    def window_set(self, length: int) -> frozenset[int]:
        """Every byte sequence of ``length`` (1 to 4) in the text, as :func:`_word` reads it."""
        found = self.windows.get(length)
        if found is None:
            data = self.data
            count = len(data) - length + 1
            if length == 1:
                found = frozenset(data)
            elif count <= 0:
                found = frozenset()
            else:
                buffer = bytearray(_WORD * count)
                for at in range(length):
                    buffer[at::_WORD] = data[at : at + count]
                found = frozenset(memoryview(buffer).cast("I"))
            self.windows[length] = found
        return found

    def starts(self, window: bytes) -> list[int]:
        """Where ``window`` starts in the text's bytes."""
        found = self.positions.get(window)
        if found is None:
            found = []
            data = self.data
            at = data.find(window)
            while at >= 0:
                found.append(at)
                at = data.find(window, at + 1)
            self.positions[window] = found
        return found


#: Context strings seen last, by the string itself (its hash is computed once per string).
_SEEN: dict[str, _Seen] = {}
_seen_characters = [0]


def _seen(text: str) -> _Seen:
    seen = _SEEN.get(text)
    if seen is None:
        seen = _Seen(text)
        _seen_characters[0] += len(seen.text)
        if _seen_characters[0] > _SEEN_CHARACTERS:
            # Bounded; a string seen again only costs listing its windows again.
            _SEEN.clear()
            _seen_characters[0] = len(seen.text)
        _SEEN[text] = seen
    return seen


class Needles:
    """The values of one ``contains`` condition, ready to be looked for in context strings.

    A value of fewer than 4 UTF-8 bytes is looked up among the windows of its length; a
    longer one is found through one of its 4-byte windows (of its first, middle and last,
    the one fewest other values share), then checked where that window occurs."""

    __slots__ = ("anchored", "anchors", "count", "empty", "shorter", "values")

    def __init__(self, values: Iterable[str]) -> None:
        # A longer value cannot be in the part of a string that is read.
        self.values = tuple(dict.fromkeys(v for v in values if len(v) <= MAX_MATCHED_LENGTH))
        self.count = len(self.values)
        self.empty = "" in self.values
        anchored: dict[int, tuple[bytes, list[tuple[int, bytes]]]] = {}
        shorter: dict[int, set[int]] = {}
        for value in self.values:
            data = value.encode("utf-8", "surrogatepass")
            if 0 < len(data) < _WORD:
                shorter.setdefault(len(data), set()).add(_word(data))
            elif data:
                best_offset, best = 0, self._window(anchored, data, 0)
                for offset in ((len(data) - _WORD) // 2, len(data) - _WORD):
                    shared = self._window(anchored, data, offset)
                    if len(shared) < len(best):
                        best_offset, best = offset, shared
                best.append((best_offset, data))
        # Windows considered but chosen by no value are dropped.
        self.anchored = {word: found for word, found in anchored.items() if found[1]}
        self.anchors = frozenset(self.anchored)
        self.shorter = tuple((length, frozenset(words)) for length, words in shorter.items())

    @staticmethod
    def _window(
        anchored: dict[int, tuple[bytes, list[tuple[int, bytes]]]], data: bytes, offset: int
    ) -> list[tuple[int, bytes]]:
        window = data[offset : offset + _WORD]
        return anchored.setdefault(_word(window), (window, []))[1]

    def found_in(self, text: str) -> bool:
        """Whether a value is in the first :data:`MAX_MATCHED_LENGTH` characters of
        ``text``."""
        if len(text) <= _SCAN_LENGTH:
            for value in self.values:  # noqa: SIM110 - cheaper than any() + a generator
                if value in text:
                    return True
            return False
        seen = _SEEN.get(text) or _seen(text)
        windows = seen.windows
        if not windows:
            seen.scanned += self.count
            if seen.scanned <= _SCAN_VALUES:
                within = seen.text
                for value in self.values:  # noqa: SIM110
                    if value in within:
                        return True
                return False
        if self.empty:
            return True
        for length, words in self.shorter:
            if not words.isdisjoint(windows.get(length) or seen.window_set(length)):
                return True
        anchors = self.anchors
        if not anchors:
            return False
        found = windows.get(_WORD) or seen.window_set(_WORD)
        if anchors.isdisjoint(found):
            return False
        data = seen.data
        for word in anchors & found:
            window, candidates = self.anchored[word]
            starts = seen.starts(window)
            for offset, value in candidates:
                for at in starts:
                    if at >= offset and data.startswith(value, at - offset):
                        return True
        return False
