"""The specialised evaluators: per flag, ``evaluate`` and ``step`` built for its shape at
compile time, with every result they can serve prepared ahead of time, so the hot path
allocates nothing (a lookup, a hash and a comparison for a plain percentage rollout).

They must serve exactly what the reference evaluator (``_reference``) serves; a property
test checks that. The evaluators come from small module-level factories and slotted
objects so that each holds only what it uses and none holds its :class:`CompiledFlag`:
compiling 10,000 flags allocates few objects for the garbage collector to walk, and a
replaced snapshot is freed by reference counting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mmh3

from flagport.engine._bucketing import BUCKETS
from flagport.engine._common import Context, Memo, unit_text
from flagport.engine._conditions import Matcher, int_text
from flagport.engine._flag import CompiledFlag, Gate, Results, Split
from flagport.engine.models import EvaluationResult, Reason

__all__ = ["specialise"]

_STATIC = Reason.STATIC
_SPLIT = Reason.SPLIT
_MATCH = Reason.TARGETING_MATCH
_murmur = mmh3.hash


def specialise(flag: CompiledFlag) -> None:
    """Install ``flag.evaluate`` (and ``flag.step``, what ``evaluate_all`` runs).

    Gates must be specialised first (topological order): their evaluators are captured.
    """
    if flag.constant is not None:
        flag.evaluate = flag.step = _answer(flag.constant)
        return
    own = _own_evaluator(flag)
    if not flag.gates:
        flag.evaluate = flag.step = own
        return
    gated = _Gated(flag, own)
    if len(flag.gates) > 1:
        flag.evaluate = flag.step = gated.evaluate_many
    elif gated.own_constant is not None:
        # A child whose own steps are constant (the portal's child at 100 %): its
        # result is a function of the parent's result alone.
        flag.evaluate, flag.step = gated.evaluate_follower, gated.step_follower
        if flag.gates[0].flag.constant is None:
            flag.follows = flag.gates[0].flag.key
    else:
        flag.evaluate, flag.step = gated.evaluate_one, gated.step_one


def _own_evaluator(flag: CompiledFlag) -> Callable[..., EvaluationResult]:
    """Steps 3-6 of the evaluation order as one closure ``(context, now=None, memo=None)``."""
    if not flag.enabled:
        return _answer(flag.result(flag.off_variant, Reason.DISABLED))
    final = _split_evaluator(flag, flag.split, _SPLIT)
    if not flag.targets and not flag.rules:
        return final
    targeted = {unit: flag.result(variant, _MATCH) for unit, variant in flag.targets.items()}
    rules: list[tuple[tuple[Matcher, ...], Any, bool]] = []
    for rule in flag.rules:
        if rule.split is None:
            served: Any = flag.result(rule.variant, _MATCH)  # type: ignore[arg-type]
            rules.append((tuple(rule.conditions), served, True))
        else:
            served = _split_evaluator(flag, rule.split, _MATCH)
            rules.append((tuple(rule.conditions), served, False))
    return _targeted(targeted, rules, final)


def _split_evaluator(
    flag: CompiledFlag, split: Split, reason: Reason
) -> Callable[..., EvaluationResult]:
    """One split for one reason as an evaluator, every result prepared."""
    if not split.needs_unit():
        return _answer(
            flag.result(
                flag.on_variant if split.threshold else flag.off_variant,
                _STATIC if reason is _SPLIT else reason,
            )
        )
    off = flag.result(flag.off_variant, reason)
    if not split.weighted:
        on = flag.result(flag.on_variant, reason)
        return _Rollout(flag, split.included_below, on, off).evaluate
    picks = [
        (below, flag.result(name, reason))
        for below, name in zip(split.picked_below, split.variants, strict=True)
    ]
    return _Weighted(flag, split.threshold, split.included_below, picks, off).evaluate


class _GateOutcomes:
    """What each result of one gate means for the gated flag, by the result's id, filled
    on first sight. A gate serves a handful of shared results, cached for the snapshot's
    lifetime (see :class:`Results`), so their ids are stable keys. With ``own_constant``
    (the gated flag's own steps are constant) a passing outcome is already combined into
    the gated flag's result."""

    __slots__ = ("gate_key", "get", "own_constant", "required", "results", "table", "upstream_off")

    def __init__(self, results: Results, gate: Gate, own_constant: EvaluationResult | None) -> None:
        self.results = results
        self.gate_key = gate.flag.key
        self.required = gate.variant
        self.upstream_off = gate.flag.off_variant
        self.own_constant = own_constant
        self.table: dict[int, EvaluationResult | Reason] = {}
        self.get = self.table.get

    def resolve(self, upstream: EvaluationResult) -> EvaluationResult | Reason:
        outcome = self.results.gate_outcome(
            self.gate_key, self.required, self.upstream_off, upstream
        )
        if self.own_constant is not None and type(outcome) is not EvaluationResult:
            outcome = self.results.combine(self.own_constant, outcome)  # type: ignore[arg-type]
        self.table[id(upstream)] = outcome
        return outcome


class _Gated:
    """The evaluators of a flag with gates (ancestors, prerequisites). ``evaluate_*`` work
    alone (evaluating the gates, through ``memo`` if given); ``step_*`` are for
    ``evaluate_all``, where each gate's result is already in ``memo``. Slotted rather than
    closures for the same reason as :class:`_Rollout`."""

    __slots__ = (
        "combine",
        "gate_key",
        "gates",
        "get",
        "own",
        "own_constant",
        "resolve",
        "upstream",
    )

    def __init__(self, flag: CompiledFlag, own: Callable[..., EvaluationResult]) -> None:
        self.own = own
        # Only a STATIC own result takes the chain's reason.
        own_static = flag.enabled and not flag.split.needs_unit()
        self.combine = flag.results.combine if own_static else None
        self.own_constant = flag.serves_everyone
        single = len(flag.gates) == 1
        self.gates = [
            (
                gate.flag.key,
                gate.flag.evaluate,
                _GateOutcomes(flag.results, gate, self.own_constant if single else None),
            )
            for gate in flag.gates
        ]
        self.gate_key, self.upstream, outcomes = self.gates[0]
        self.get, self.resolve = outcomes.get, outcomes.resolve

    def evaluate_follower(
        self, context: Context, now: float | None = None, memo: Memo | None = None
    ) -> EvaluationResult:
        upstream = None if memo is None else memo.get(self.gate_key)
        if upstream is None:
            upstream = self.upstream(context, now, memo)
            if memo is not None:
                memo[self.gate_key] = upstream
        return self.get(id(upstream)) or self.resolve(upstream)  # type: ignore[return-value]

    def step_follower(self, context: Context, now: float | None, memo: Memo) -> EvaluationResult:
        upstream = memo[self.gate_key]
        return self.get(id(upstream)) or self.resolve(upstream)  # type: ignore[return-value]

    def evaluate_one(
        self, context: Context, now: float | None = None, memo: Memo | None = None
    ) -> EvaluationResult:
        upstream = None if memo is None else memo.get(self.gate_key)
        if upstream is None:
            upstream = self.upstream(context, now, memo)
            if memo is not None:
                memo[self.gate_key] = upstream
        outcome = self.get(id(upstream)) or self.resolve(upstream)
        if type(outcome) is EvaluationResult:
            return outcome
        if self.combine is None or outcome is _STATIC:
            return self.own(context, now)
        return self.combine(self.own(context, now), outcome)  # type: ignore[arg-type]

    def step_one(self, context: Context, now: float | None, memo: Memo) -> EvaluationResult:
        upstream = memo[self.gate_key]
        outcome = self.get(id(upstream)) or self.resolve(upstream)
        if type(outcome) is EvaluationResult:
            return outcome
        if self.combine is None or outcome is _STATIC:
            return self.own(context, now)
        return self.combine(self.own(context, now), outcome)  # type: ignore[arg-type]

    def evaluate_many(
        self, context: Context, now: float | None = None, memo: Memo | None = None
    ) -> EvaluationResult:
        chain_reason = _STATIC
        for gate_key, upstream_eval, outcomes in self.gates:
            upstream = None if memo is None else memo.get(gate_key)
            if upstream is None:
                upstream = upstream_eval(context, now, memo)
                if memo is not None:
                    memo[gate_key] = upstream
            outcome = outcomes.get(id(upstream)) or outcomes.resolve(upstream)
            if type(outcome) is EvaluationResult:
                return outcome
            if chain_reason is _STATIC:
                chain_reason = outcome  # type: ignore[assignment]
        if self.combine is None or chain_reason is _STATIC:
            return self.own(context, now)
        return self.combine(self.own(context, now), chain_reason)


def _answer(result: EvaluationResult) -> Callable[..., EvaluationResult]:
    return lambda context, now=None, memo=None: result


def _targeted(
    targeted: dict[str, EvaluationResult],
    rules: list[tuple[tuple[Matcher, ...], Any, bool]],
    final: Callable[..., EvaluationResult],
) -> Callable[..., EvaluationResult]:
    def evaluate_targeted(
        context: Context, now: float | None = None, memo: Memo | None = None
    ) -> EvaluationResult:
        if targeted:
            key = context.get("targetingKey")
            if type(key) is int:
                key = int_text(key)
            if type(key) is str:
                hit = targeted.get(key)
                if hit is not None:
                    return hit
        for conditions, served, fixed in rules:
            for condition in conditions:
                if not condition(context, now):
                    break
            else:
                return served if fixed else served(context, now)  # type: ignore[no-any-return]
        return final(context, now)

    return evaluate_targeted


class _Rollout:
    """A percentage split without weights. A slotted object rather than a closure: a
    closure holds a cell per captured name, and 10,000 flags' cells make the garbage
    collector walk far more during compilation (bound-method calls cost ~5 % more)."""

    __slots__ = ("bucket_by", "included_below", "off", "on", "prefix", "results")

    def __init__(
        self,
        flag: CompiledFlag,
        included_below: int,
        on: EvaluationResult,
        off: EvaluationResult,
    ) -> None:
        self.results = flag.results
        self.bucket_by = flag.bucket_by
        self.prefix = flag.prefix
        #: The split's hash bound (``Split.included_below``): the bucket is never computed.
        self.included_below = included_below
        self.on = on
        self.off = off

    def evaluate(
        self, context: Context, now: float | None = None, memo: Memo | None = None
    ) -> EvaluationResult:
        unit = context.get(self.bucket_by)
        if type(unit) is not str or not unit or not unit.isascii():
            unit = unit_text(unit)
            if type(unit) is not str:
                return self.results.unit_missing() if unit is None else self.results.unit_invalid()
        if _murmur(self.prefix + unit, 0, False) < self.included_below:
            return self.on
        return self.off


class _Weighted:
    """A split with weights: included units (seed 0) pick a variant with seed 1."""

    __slots__ = ("bound", "bucket_by", "included_below", "off", "picks", "prefix", "results")

    def __init__(
        self,
        flag: CompiledFlag,
        bound: int,
        included_below: int,
        picks: list[tuple[int, EvaluationResult]],
        off: EvaluationResult,
    ) -> None:
        self.results = flag.results
        self.bucket_by = flag.bucket_by
        self.prefix = flag.prefix
        self.bound = bound
        #: Hash bounds computed once (``Split.included_below``, ``Split.picked_below``).
        self.included_below = included_below
        self.picks = picks
        self.off = off

    def evaluate(
        self, context: Context, now: float | None = None, memo: Memo | None = None
    ) -> EvaluationResult:
        unit = context.get(self.bucket_by)
        if type(unit) is not str or not unit or not unit.isascii():
            unit = unit_text(unit)
            if type(unit) is not str:
                return self.results.unit_missing() if unit is None else self.results.unit_invalid()
        text = self.prefix + unit
        if self.bound < BUCKETS and _murmur(text, 0, False) >= self.included_below:
            return self.off
        hashed = _murmur(text, 1, False)
        for below, result in self.picks:
            if hashed < below:
                return result
        return self.picks[-1][1]  # pragma: no cover - point < total always
