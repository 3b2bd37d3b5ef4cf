"""How much of a context string conditions read, and ``contains`` over many values.

No context may cost more than a bounded amount of work per condition value. A context
string (up to the 64 KiB of an evaluation body) is therefore read at most
:data:`MAX_MATCHED_LENGTH` characters deep (the rule itself is written in ``_conditions``),
and ``contains`` does not scan a long string once per value: :func:`contains_test` looks the
values up in the set of the string's short byte sequences instead. That set is built once
per string, by C code (slices of a buffer viewed as integers), and shared by every condition
that reads the string, so its cost does not grow with the number of values or conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["MAX_MATCHED_LENGTH", "contains_test"]

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
#: Lookups of a string's windows in its buffer before they are made a set: iterating a
#: buffer costs less than building the set, until the set has served a few conditions.
_LOOKUPS = 4
#: Bytes of the strings whose windows are kept: an evaluation body's worth (cleared when
#: full). Their windows take at most about 60 times that.
_SEEN_BYTES = 64 * 1024


def _word(chunk: bytes) -> int:
    """The integer of up to 4 bytes as a window of them reads (zero-padded, native order)."""
    return memoryview(chunk.ljust(_WORD, b"\0")).cast("I")[0]


class _Seen:
    """A context string's first characters, how many values were scanned for in them, and
    the windows of their UTF-8 bytes. Shared through :data:`_SEEN` by every condition that
    reads the same string (an evaluation of every flag reads it many times).

    Windows are first read from a buffer as they are (a lookup iterates them in C); a
    string looked up more than :data:`_LOOKUPS` times gets them as a set."""

    __slots__ = ("data", "lookups", "positions", "scanned", "text", "views", "windows")

    def __init__(self, text: str) -> None:
        self.text = text[:MAX_MATCHED_LENGTH]
        self.scanned = 0
        self.lookups = 0
        # Lone surrogates (valid in a Python string) encode like any other character.
        self.data = self.text.encode("utf-8", "surrogatepass")
        self.views: dict[int, memoryview] = {}
        #: Windows as sets, by length, once the string was looked up often enough.
        self.windows: dict[int, frozenset[int]] = {}
        self.positions: dict[bytes, list[int]] = {}

    def lookup(self, length: int) -> frozenset[int] | memoryview:
        """Every byte sequence of ``length`` (1 to 4) in the text, as :func:`_word` reads
        it: a set if the text was looked up often, else a view to iterate."""
        self.lookups += 1
        view = self.views.get(length)
        if view is None:
            data = self.data
            count = len(data) - length + 1
            if length == 1 or count <= 0:
                view = memoryview(data if count > 0 else b"")
            else:
                buffer = bytearray(_WORD * count)
                for at in range(length):
                    buffer[at::_WORD] = data[at : at + count]
                view = memoryview(buffer).cast("I")
            self.views[length] = view
        if self.lookups <= _LOOKUPS:
            return view
        found = self.windows[length] = frozenset(view)
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
_seen_bytes = [0]


def _seen(text: str) -> _Seen:
    seen = _SEEN.get(text)
    if seen is None:
        seen = _Seen(text)
        _seen_bytes[0] += len(seen.data)
        if _seen_bytes[0] > _SEEN_BYTES:
            # Bounded; a string seen again only costs listing its windows again.
            _SEEN.clear()
            _seen_bytes[0] = len(seen.data)
        _SEEN[text] = seen
    return seen


def contains_test(values: Iterable[str]) -> Callable[[str], bool]:
    """Whether one of ``values`` is in the first :data:`MAX_MATCHED_LENGTH` characters of
    a string: the test of one ``contains`` condition.

    A value of fewer than 4 UTF-8 bytes is looked up among the windows of its length; a
    longer one is found through one of its 4-byte windows (of its first, middle and last,
    the one fewest other values share), then checked where that window occurs. The test is
    a closure over what it reads: it runs once per condition and evaluation."""
    # A longer value cannot be in the part of a string that is read.
    kept = tuple(dict.fromkeys(value for value in values if len(value) <= MAX_MATCHED_LENGTH))
    if "" in kept:
        return _always
    anchored, shorter = _index(kept)
    if len(kept) == 1 and shorter:
        return _one_short_value(kept[0], *shorter[0])
    count = len(kept)
    anchors = frozenset(anchored)

    def found_in(text: str) -> bool:
        if len(text) <= _SCAN_LENGTH:
            for value in kept:  # noqa: SIM110 - cheaper than any() + a generator
                if value in text:
                    return True
            return False
        seen = _SEEN.get(text) or _seen(text)
        windows = seen.windows
        if not seen.views:
            seen.scanned += count
            if seen.scanned <= _SCAN_VALUES:
                within = seen.text
                for value in kept:  # noqa: SIM110
                    if value in within:
                        return True
                return False
        for length, words in shorter:
            if not words.isdisjoint(windows.get(length) or seen.lookup(length)):
                return True
        if not anchors:
            return False
        found = windows.get(_WORD) or seen.lookup(_WORD)
        if anchors.isdisjoint(found):
            return False
        data = seen.data
        for word in anchors.intersection(found):
            window, candidates = anchored[word]
            starts = seen.starts(window)
            for offset, candidate in candidates:
                for at in starts:
                    if at >= offset and data.startswith(candidate, at - offset):
                        return True
        return False

    return found_in


def _always(text: str) -> bool:
    return True  # the empty string is in every string


def _one_short_value(value: str, length: int, words: frozenset[int]) -> Callable[[str], bool]:
    """:func:`contains_test` of one value of fewer than 4 bytes."""
    (word,) = words

    def found_in(text: str) -> bool:
        if len(text) <= _SCAN_LENGTH:
            return value in text
        seen = _SEEN.get(text) or _seen(text)
        if not seen.views:
            seen.scanned += 1
            if seen.scanned <= _SCAN_VALUES:
                return value in seen.text
        return word in (seen.windows.get(length) or seen.lookup(length))

    return found_in


Anchored = dict[int, tuple[bytes, list[tuple[int, bytes]]]]


def _index(values: tuple[str, ...]) -> tuple[Anchored, tuple[tuple[int, frozenset[int]], ...]]:
    """(the values of 4 bytes or more by the window each is found through, with that
    window's bytes and where it is in the value; the shorter values' words by length)."""
    anchored: Anchored = {}
    shorter: dict[int, set[int]] = {}

    def bucket(data: bytes, offset: int) -> list[tuple[int, bytes]]:
        window = data[offset : offset + _WORD]
        return anchored.setdefault(_word(window), (window, []))[1]

    for value in values:
        data = value.encode("utf-8", "surrogatepass")
        if len(data) < _WORD:
            shorter.setdefault(len(data), set()).add(_word(data))
            continue
        best_offset, best = 0, bucket(data, 0)
        for offset in ((len(data) - _WORD) // 2, len(data) - _WORD):
            shared = bucket(data, offset)
            if len(shared) < len(best):
                best_offset, best = offset, shared
        best.append((best_offset, data))
    # Windows considered but chosen by no value are dropped.
    chosen = {word: found for word, found in anchored.items() if found[1]}
    return chosen, tuple((length, frozenset(words)) for length, words in shorter.items())
