"""Stage 1 of the stats (see :mod:`flagport_server.stats`): the request path's counter."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from flagport.engine import ErrorCode, EvaluationResult, Reason
from flagport.tally import Counted, EvaluationTally

__all__ = ["UNKNOWN_FLAG_LABEL", "UNKNOWN_RESULT", "Drained", "EvaluationCounter"]

#: The ``flag`` label of evaluations of unknown keys (not a valid key, so no clash).
UNKNOWN_FLAG_LABEL = "(unknown)"
#: One shared result for every unknown key: callers choose those, so they are not kept apart.
UNKNOWN_RESULT = EvaluationResult(
    key=UNKNOWN_FLAG_LABEL,
    value=None,
    variant=None,
    reason=Reason.ERROR,
    error_code=ErrorCode.FLAG_NOT_FOUND,
)


class Drained(NamedTuple):
    """What :meth:`EvaluationCounter.drain` hands over: what was counted per result, and the
    bulk evaluations whose units are not in ``counted`` yet (``contexts[i]`` was served
    ``results[i]``)."""

    counted: list[Counted]
    contexts: list[Mapping[str, Any]]
    results: list[Mapping[str, EvaluationResult]]


class EvaluationCounter(EvaluationTally):
    """The request path's counter: the evaluation tally (:meth:`count` for a single
    evaluation), plus a log of bulk evaluations whose units are added at the drain."""

    __slots__ = ("_contexts", "_results")

    def __init__(
        self, bucket_by: Callable[[str], str | None], *, collect_units: bool = True
    ) -> None:
        super().__init__(bucket_by, collect_units=collect_units)
        self._contexts: list[Mapping[str, Any]] = []
        self._results: list[Mapping[str, EvaluationResult]] = []

    def count_many(
        self,
        results: Mapping[str, EvaluationResult],
        context: Mapping[str, Any],
        attributes: Iterable[str],
    ) -> None:
        """Count a bulk evaluation (``results`` by flag key, as ``evaluate_all`` gives them:
        kept, so not to be changed). Its units are left for the drain: 50 set insertions here
        cost a bulk request ~6 us; two appends cost ~0.1 us. Of the context only the
        ``attributes`` the flags bucket by are kept, and only as strings or integers (what a
        unit can be): a caller's context may hold 64 KiB of nested lists, which held until
        the drain would be memory, and work for the garbage collector, per request. The
        kept objects are invisible to the collector (strings, numbers, ``gc=False``
        results)."""
        by_result = self.by_result
        for result in results.values():
            tally = by_result.get(id(result))
            if tally is None:
                tally = self.tally_for(result)
            next(tally.calls)
        if self.collect_units:
            units = {}
            for name in attributes:
                value = context.get(name)
                if value.__class__ is str or value.__class__ is int:
                    units[name] = value
            self._contexts.append(units)
            self._results.append(results)

    def drain(self) -> Drained:
        """What was counted since the last call."""
        contexts, self._contexts = self._contexts, []
        results, self._results = self._results, []
        return Drained(self.take(), contexts, results)
