"""The evaluation tally: evaluations and units counted per engine result, in memory, by
whoever evaluates (the server for what it serves, ``LocalClient`` for what it evaluates in
process), and taken every so often to be reported.

The engine shares one prepared result object per flag, variant and reason of a snapshot, so
one :class:`ResultTally` per result object counts an evaluation with a dict lookup by
``id(result)`` (the tally keeps the result alive, so its id is not reused meanwhile), an
atomic ``next()`` on an :class:`itertools.count` and, when the flag's units are collected,
a set add. Nothing else happens on the evaluation path: the rule for what counts as a unit
(:func:`counted_unit`) is applied when the tally is taken. The engine itself counts nothing.

Evaluations may run on several threads while another takes the tally, and none is lost: the
counts are never reset (a take reads how far each count has gone), units leave a set only
once listed, and a tally is dropped only when nothing but the tally holds its result any more
(an old snapshot's result: no evaluation can produce it again, none is about to count it).
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from flagport.engine import EvaluationResult, unit_text

__all__ = ["MAX_UNIT_LENGTH", "Counted", "EvaluationTally", "ResultTally", "counted_unit"]

#: Longest unit kept as it is (an e-mail address is at most 254 characters); a longer one is
#: kept as a 40-character digest (see :func:`counted_unit`).
MAX_UNIT_LENGTH = 256
#: ``sys.getrefcount`` of a result held by its tally alone (the call's argument is one).
_HELD_BY_TALLY_ONLY = 2


def counted_unit(value: Any) -> str | None:
    """The unit a context value (or a reported unit) counts as: the unit the engine buckets
    (:func:`flagport.engine.unit_text`: a non-empty string, or an integer as its decimal
    string), None for anything the engine does not bucket. A string longer than
    :data:`MAX_UNIT_LENGTH` counts as its digest, so what is held and sent per unit is
    bounded whatever the contexts carry; everyone digests alike, so the unit is still counted
    once."""
    # The common case first (what unit_text returns unchanged), then the engine's rule.
    unit = value if value.__class__ is str and value.isascii() else unit_text(value)
    if unit.__class__ is not str or not unit:
        return None
    if len(unit) > MAX_UNIT_LENGTH:
        return "blake2b:" + hashlib.blake2b(unit.encode(), digest_size=16).hexdigest()
    return unit


class ResultTally:
    """The evaluations of one result object: how many (``calls``, an atomic counter), and
    the raw units (``context[bucket_by]``, strings and integers) seen since the last take."""

    __slots__ = ("bucket_by", "calls", "result", "taken", "units")

    def __init__(self, result: EvaluationResult, bucket_by: str | None) -> None:
        self.result = result
        #: The attribute whose values are the units; None: no units collected.
        self.bucket_by = bucket_by
        #: ``next(calls)`` counts one evaluation (atomic under the GIL, unlike ``+= 1``).
        self.calls = itertools.count()
        self.units: set[str | int] = set()
        #: Evaluations handed over by the takes so far.
        self.taken = 0

    def total(self) -> int:
        """Evaluations counted since the tally was made (``calls`` is not advanced)."""
        return int(repr(self.calls)[6:-1])  # "count(n)"

    def take(self) -> Counted | None:
        """What was counted since the last take, or None if nothing was."""
        total = self.total()
        evaluations = total - self.taken
        raw = self.units
        if not evaluations and not raw:
            return None
        # Two C calls, each atomic under the GIL: a unit added meanwhile by an evaluation on
        # another thread is either listed now or left in the set for the next take.
        listed = list(raw)
        raw.difference_update(listed)
        self.taken = total
        units = {unit for value in listed if (unit := counted_unit(value)) is not None}
        return Counted(self, evaluations, list(units))


class Counted(NamedTuple):
    """What one take hands over for one result: its evaluations, and the units they were
    served to (each counted once, by :func:`counted_unit`; a consumer may add more)."""

    tally: ResultTally
    evaluations: int
    units: list[str]

    @property
    def result(self) -> EvaluationResult:
        return self.tally.result

    @property
    def bucket_by(self) -> str | None:
        return self.tally.bucket_by


class EvaluationTally:
    """Evaluations and units per result object, for :meth:`take` to hand over.

    ``bucket_by(flag_key)`` names the flag's unit attribute in the snapshot being served;
    it is asked once per result object. With ``collect_units=False`` only evaluations are
    counted. ``by_result`` (``id(result)`` -> :class:`ResultTally`) is public for a hot path
    that inlines :meth:`count`.
    """

    __slots__ = ("_bucket_by", "by_result", "collect_units")

    def __init__(
        self, bucket_by: Callable[[str], str | None], *, collect_units: bool = True
    ) -> None:
        self._bucket_by = bucket_by
        self.collect_units = collect_units
        self.by_result: dict[int, ResultTally] = {}

    def tally_for(self, result: EvaluationResult) -> ResultTally:
        """The tally of ``result``, made on its first evaluation."""
        tally = self.by_result.get(id(result))
        if tally is not None:
            return tally
        by = None
        if self.collect_units and result.error_code is None and result.variant is not None:
            by = self._bucket_by(result.key)
        # setdefault: two threads meeting a new result at once share one tally.
        return self.by_result.setdefault(id(result), ResultTally(result, by))

    def count(self, result: EvaluationResult, context: Mapping[str, Any]) -> None:
        """Count one evaluation of ``result`` for ``context``."""
        tally = self.by_result.get(id(result))
        if tally is None:
            tally = self.tally_for(result)
        next(tally.calls)
        by = tally.bucket_by
        if by is not None:
            unit = context.get(by)
            # Strings and integers only (hashable, and all counted_unit keeps).
            if unit.__class__ is str or unit.__class__ is int:
                tally.units.add(unit)

    def take(self) -> list[Counted]:
        """What was counted since the last take, per result (results with nothing new are
        left out). A tally with nothing new whose result nothing else holds is dropped: the
        results of a snapshot no longer served go with it."""
        counted: list[Counted] = []
        by_result = self.by_result
        for result_id, tally in list(by_result.items()):
            taken = tally.take()
            if taken is not None:
                counted.append(taken)
            elif sys.getrefcount(tally.result) <= _HELD_BY_TALLY_ONLY:
                # No snapshot serves the result and no evaluation holds it: none can count
                # into this tally any more.
                del by_result[result_id]
        return counted

    def give_back(self, counted: Iterable[Counted], max_units: int) -> None:
        """Put back what a take handed over and could not be delivered: the next take hands
        it over again. A tally keeps at most ``max_units`` units (the rest are dropped)."""
        for undelivered in counted:
            tally = undelivered.tally
            tally.taken -= undelivered.evaluations
            room = max_units - len(tally.units)
            if room > 0:
                tally.units.update(undelivered.units[:room])
