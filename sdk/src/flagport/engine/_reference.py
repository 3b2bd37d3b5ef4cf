"""The reference evaluator: the evaluation order and its reasons, written once and plainly
over a compiled flag's pieces.

It is the oracle. The specialised evaluators (``_specialised``) that serve every request
must give exactly its results (a Hypothesis property test compares them on random
documents and contexts), and compiling uses it to work out the results of constant flags.
It is never on the hot path.

The order, for one flag:

1. a flag that failed to compile serves its off variant, ``PARSE_ERROR``;
2. each gate (the nearest existing ancestor, then each prerequisite, in order): an error
   is served as is, and a gate that does not pass makes this flag serve its off variant
   with the gate's reason, both with ``gatedBy`` naming the gate that blocked;
3. disabled: the off variant, ``DISABLED``;
4. the context's ``targetingKey`` listed in ``targets``: that variant, ``TARGETING_MATCH``;
5. the first rule whose conditions all match: its variant, or its split of the matching
   units, ``TARGETING_MATCH``;
6. the flag's split: ``SPLIT``, or ``STATIC`` when no unit is needed (0 % or 100 %
   without weights). An on result is ``STATIC`` only if the whole chain was: otherwise it
   takes the reason of the first gate that passed with another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flagport.engine._common import Context, Memo, unit_text
from flagport.engine._conditions import int_text
from flagport.engine.models import EvaluationResult, Reason

if TYPE_CHECKING:
    from flagport.engine._flag import CompiledFlag, Split

__all__ = ["reference_evaluate", "reference_own"]

_STATIC = Reason.STATIC
_SPLIT = Reason.SPLIT
_MATCH = Reason.TARGETING_MATCH


def reference_evaluate(
    flag: CompiledFlag, context: Context, now: float | None = None, memo: Memo | None = None
) -> EvaluationResult:
    """``flag``'s result for ``context``, gates included (each evaluated once through
    ``memo`` when given)."""
    if flag.broken is not None:
        return flag.broken_result()
    chain_reason = _STATIC
    for gate in flag.gates:
        upstream = memo.get(gate.flag.key) if memo is not None else None
        if upstream is None:
            upstream = gate.flag.evaluate(context, now, memo)
            if memo is not None:
                memo[gate.flag.key] = upstream
        gated_by = (
            upstream.metadata.get("gatedBy", gate.flag.key) if upstream.metadata else gate.flag.key
        )
        if upstream.error_code is not None:
            return flag.error(upstream.error_code, upstream.error_message or "", gated_by)
        if not gate.passes(upstream):
            return flag.result(flag.off_variant, upstream.reason, gated_by)
        if chain_reason is _STATIC:
            chain_reason = upstream.reason
    own = reference_own(flag, context, now)
    if chain_reason is not _STATIC and own.reason is _STATIC and own.variant != flag.off_variant:
        return flag.result(own.variant, chain_reason)  # type: ignore[arg-type]
    return own


def reference_own(flag: CompiledFlag, context: Context, now: float | None) -> EvaluationResult:
    """Steps 3-6 for ``flag`` alone, its gates left out."""
    if not flag.enabled:
        return flag.result(flag.off_variant, Reason.DISABLED)
    if flag.targets:
        key = context.get("targetingKey")
        if type(key) is int:
            key = int_text(key)
        if type(key) is str:
            variant = flag.targets.get(key)
            if variant is not None:
                return flag.result(variant, _MATCH)
    for rule in flag.rules:
        if rule.matches(context, now):
            if rule.split is None:
                return flag.result(rule.variant, _MATCH)  # type: ignore[arg-type]
            return _split(flag, rule.split, context, _MATCH)
    return _split(flag, flag.split, context, _SPLIT)


def _split(flag: CompiledFlag, split: Split, context: Context, reason: Reason) -> EvaluationResult:
    if not split.needs_unit():
        if split.threshold == 0:
            return flag.result(flag.off_variant, _STATIC if reason is _SPLIT else reason)
        return flag.result(flag.on_variant, _STATIC if reason is _SPLIT else reason)
    unit = unit_text(context.get(flag.bucket_by))
    if type(unit) is not str:
        return flag.results.unit_missing() if unit is None else flag.results.unit_invalid()
    included, variant = split.pick(flag.prefix, unit)
    if not included:
        return flag.result(flag.off_variant, reason)
    return flag.result(variant or flag.on_variant, reason)
