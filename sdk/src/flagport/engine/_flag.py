"""A compiled flag and its pieces: splits, rules, gates and the results it serves.

:func:`~flagport.engine.compile_snapshot` builds these (``_compile``); the reference
evaluator (``_reference``) reads them as they are, and the specialised evaluators
(``_specialised``) are built from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mmh3

from flagport._exceptions import InvalidDocumentError
from flagport.engine._bucketing import BUCKETS, first_hash_at
from flagport.engine._common import Context, Memo, values_say_on
from flagport.engine._conditions import Matcher
from flagport.engine._reference import reference_evaluate
from flagport.engine.models import (
    MAX_WEIGHT_TOTAL,
    ErrorCode,
    EvaluationResult,
    Flag,
    Reason,
)

__all__ = ["CompiledFlag", "CompiledRule", "Gate", "Results", "Split"]

_STATIC = Reason.STATIC
_ERROR = Reason.ERROR


class Split:
    """Percentage inclusion plus an optional weighted choice of variant (seed 1)."""

    __slots__ = (
        "cumulative",
        "included_below",
        "picked_below",
        "threshold",
        "total",
        "variants",
    )

    def __init__(
        self, bound: int, weights: dict[str, int] | None, path: str, variants: Mapping[str, Any]
    ) -> None:
        self.threshold = bound
        #: A unit is included when its seed-0 hash is below this (its bucket below ``bound``).
        self.included_below = first_hash_at(bound)
        self.cumulative: list[int] = []
        #: ``variants[i]`` is picked when the seed-1 hash is below ``picked_below[i]`` (and
        #: not an earlier bound): its point among the weights is below ``cumulative[i]``.
        self.picked_below: list[int] = []
        self.variants: list[str] = []
        self.total = 0
        if weights is None:
            return
        running = 0
        for name, weight in weights.items():
            if name not in variants:
                raise InvalidDocumentError(
                    f"weights name unknown variant {name!r}", f"{path}.weights"
                )
            if type(weight) is not int or weight < 0:
                raise InvalidDocumentError(
                    f"weight of {name!r} must be a whole number >= 0, got {weight!r}",
                    f"{path}.weights",
                )
            if weight == 0:
                continue
            running += weight
            self.cumulative.append(running)
            self.variants.append(name)
        if running <= 0 or running > MAX_WEIGHT_TOTAL:
            raise InvalidDocumentError(
                f"weights must total between 1 and {MAX_WEIGHT_TOTAL}, got {running}",
                f"{path}.weights",
            )
        self.total = running
        self.picked_below = [first_hash_at(limit, running) for limit in self.cumulative]

    @property
    def weighted(self) -> bool:
        return self.total > 0

    def needs_unit(self) -> bool:
        return self.weighted or 0 < self.threshold < BUCKETS

    def pick(self, prefix: str, unit: str) -> tuple[bool, str | None]:
        """(included, weighted variant or None). ``prefix`` is ``salt + ":"``."""
        if self.threshold < BUCKETS and mmh3.hash(prefix + unit, 0, False) >= self.included_below:
            return False, None
        if not self.total:
            return True, None
        hashed = mmh3.hash(prefix + unit, 1, False)
        for below, name in zip(self.picked_below, self.variants, strict=True):
            if hashed < below:
                return True, name
        return True, self.variants[-1]  # pragma: no cover - point < total always


class CompiledRule:
    __slots__ = ("conditions", "name", "split", "variant")

    def __init__(
        self, conditions: list[Matcher], variant: str | None, split: Split | None, name: str | None
    ) -> None:
        self.conditions = conditions
        self.variant = variant
        self.split = split
        self.name = name

    def matches(self, context: Context, now: float | None) -> bool:
        for condition in self.conditions:  # noqa: SIM110 - cheaper than all() + a generator
            if not condition(context, now):
                return False
        return True


class Gate:
    """An ancestor (the nearest existing dotted prefix) or a prerequisite."""

    __slots__ = ("flag", "kind", "variant")

    def __init__(self, flag: CompiledFlag, kind: str, variant: str | None) -> None:
        self.flag = flag
        self.kind = kind  # "parent" | "prerequisite"
        self.variant = variant

    def passes(self, result: EvaluationResult) -> bool:
        if self.variant is not None:
            return result.variant == self.variant
        return result.variant != self.flag.off_variant


class Results:
    """The results one flag serves, built once and shared (no allocation while
    evaluating). Every result a compiled flag serves comes from here and stays cached for
    the snapshot's lifetime, so gates can key their outcomes by result id.

    Evaluators hold this object, never their :class:`CompiledFlag`: a flag's evaluators
    then form no reference cycle with it, and a replaced snapshot is freed by reference
    counting instead of waiting for the garbage collector."""

    __slots__ = ("bucket_by", "cache", "key", "off_variant", "says_on", "variants")

    def __init__(self, key: str, flag: Flag) -> None:
        self.key = key
        self.variants = flag.variants
        self.off_variant = flag.off_variant
        self.bucket_by = flag.bucket_by
        #: Whether served results carry ``metadata.on`` (see :func:`values_say_on`).
        self.says_on = not values_say_on(flag.variants, flag.off_variant)
        self.cache: dict[tuple[Any, ...], EvaluationResult] = {}

    def result(self, variant: str, reason: Reason, gated_by: str | None = None) -> EvaluationResult:
        cache_key = (variant, reason, gated_by)
        cached = self.cache.get(cache_key)
        if cached is None:
            metadata: dict[str, Any] = {} if gated_by is None else {"gatedBy": gated_by}
            if self.says_on:
                # The rule gates use: a flag is on unless it serves its own off variant.
                metadata["on"] = variant != self.off_variant
            cached = EvaluationResult(
                key=self.key,
                value=self.variants.get(variant),
                variant=variant,
                reason=reason,
                metadata=metadata or None,
            )
            self.cache[cache_key] = cached
        return cached

    def error(self, code: ErrorCode, message: str, gated_by: str | None = None) -> EvaluationResult:
        cache_key = (code, message, gated_by)
        cached = self.cache.get(cache_key)
        if cached is None:
            cached = EvaluationResult(
                key=self.key,
                value=None,
                variant=None,
                reason=_ERROR,
                error_code=code,
                error_message=message,
                metadata=None if gated_by is None else {"gatedBy": gated_by},
            )
            self.cache[cache_key] = cached
        return cached

    def unit_missing(self) -> EvaluationResult:
        return self.error(
            ErrorCode.TARGETING_KEY_MISSING,
            f"flag {self.key!r} splits by {self.bucket_by!r}, which the context does not provide",
        )

    def unit_invalid(self) -> EvaluationResult:
        return self.error(
            ErrorCode.INVALID_CONTEXT,
            f"flag {self.key!r} splits by {self.bucket_by!r}, which must be a string or an integer",
        )

    def gate_outcome(
        self, gate_key: str, required: str | None, upstream_off: str, upstream: EvaluationResult
    ) -> EvaluationResult | Reason:
        """What ``upstream`` (the result of gate ``gate_key``) means for this flag: the final
        result when the gate blocks (its error, or the off variant with ``gatedBy``), else
        the reason it passes with."""
        gated_by = upstream.metadata.get("gatedBy", gate_key) if upstream.metadata else gate_key
        if upstream.error_code is not None:
            return self.error(upstream.error_code, upstream.error_message or "", gated_by)
        passes = (
            upstream.variant == required
            if required is not None
            else upstream.variant != upstream_off
        )
        if not passes:
            return self.result(self.off_variant, upstream.reason, gated_by)
        return upstream.reason

    def combine(self, own: EvaluationResult, chain_reason: Reason) -> EvaluationResult:
        """The last sentence of the evaluation order: an on result is ``STATIC`` only if the
        whole chain was."""
        if (
            chain_reason is not _STATIC
            and own.reason is _STATIC
            and own.variant != self.off_variant
        ):
            return self.result(own.variant, chain_reason)  # type: ignore[arg-type]
        return own


class CompiledFlag:
    """One flag, ready to evaluate. Immutable once its snapshot is built.

    Besides the evaluators, it carries what compiling learnt about the flag:
    :attr:`constant`, :attr:`serves_everyone` and :attr:`reads_clock`."""

    __slots__ = (
        "broken",
        "bucket_by",
        "constant",
        "declared_gates",
        "enabled",
        "evaluate",
        "flag",
        "follows",
        "gates",
        "key",
        "off_variant",
        "on_variant",
        "prefix",
        "reads_clock",
        "results",
        "rules",
        "serves_everyone",
        "split",
        "step",
        "targets",
        "variants",
    )

    #: ``evaluate(context, now=None, memo=None) -> EvaluationResult``: a specialised
    #: closure (``_specialised``) once the snapshot is built; the reference evaluator
    #: while compiling.
    evaluate: Callable[..., EvaluationResult]
    #: ``step(context, now, memo)``: ``evaluate`` for ``evaluate_all``, where every gate's
    #: result is already in ``memo`` (flags run in topological order).
    step: Callable[..., EvaluationResult]

    def __init__(self, key: str, flag: Flag) -> None:
        self.key = key
        self.flag = flag
        self.enabled = flag.enabled
        self.variants = flag.variants
        self.on_variant = flag.on_variant
        self.off_variant = flag.off_variant
        self.bucket_by = flag.bucket_by
        self.prefix = (flag.salt if flag.salt is not None else key) + ":"
        self.gates: list[Gate] = []
        #: Every ancestor and prerequisite, before folding drops the constant ones
        #: (``explain`` shows them all).
        self.declared_gates: list[Gate] = []
        self.targets: dict[str, str] = {}
        self.rules: list[CompiledRule] = []
        self.split = Split(BUCKETS, None, "", {})
        self.broken: InvalidDocumentError | None = None
        #: The result for every context, gates included, when it cannot depend on the
        #: context (a flag that failed to compile: its ``PARSE_ERROR``).
        self.constant: EvaluationResult | None = None
        #: The result the flag's own settings serve everyone alike, when they leave nothing
        #: to the context: disabled (its off variant, ``DISABLED``), or enabled with no
        #: targets, no rules and a 0 % or 100 % split without weights (``STATIC``). Its
        #: gates are not considered (an ancestor or prerequisite may still turn it off;
        #: :attr:`constant` is the result with them). ``None`` for a broken flag.
        self.serves_everyone: EvaluationResult | None = None
        #: Whether the result can depend on the evaluation time (``$now``): a condition
        #: of its own rules or of a segment they use reads it, or a gate's result does.
        self.reads_clock = False
        self.results = Results(key, flag)
        self.evaluate = self.step = self.evaluate_reference
        #: The gate's key when this flag's result is a function of that gate's alone.
        self.follows: str | None = None

    def evaluate_reference(
        self, context: Context, now: float | None = None, memo: Memo | None = None
    ) -> EvaluationResult:
        """What the reference evaluator serves (``_reference``): the oracle ``evaluate``
        must agree with."""
        return reference_evaluate(self, context, now, memo)

    # -- results ------------------------------------------------------------------------

    def result(self, variant: str, reason: Reason, gated_by: str | None = None) -> EvaluationResult:
        """The (cached, shared) result serving ``variant`` for ``reason``."""
        return self.results.result(variant, reason, gated_by)

    def error(self, code: ErrorCode, message: str, gated_by: str | None = None) -> EvaluationResult:
        return self.results.error(code, message, gated_by)

    def broken_result(self) -> EvaluationResult:
        """A flag that failed to compile serves its off variant, flagged PARSE_ERROR."""
        cached = self.results.cache.get(("broken",))
        if cached is None:
            off = self.off_variant if self.off_variant in self.variants else None
            cached = EvaluationResult(
                key=self.key,
                value=self.variants.get(off) if off is not None else None,
                variant=off,
                reason=_ERROR,
                error_code=ErrorCode.PARSE_ERROR,
                error_message=f"flag {self.key!r} is invalid: {self.broken}",
            )
            self.results.cache[("broken",)] = cached
        return cached

    def gate_outcome(self, gate: Gate, upstream: EvaluationResult) -> EvaluationResult | Reason:
        """What ``upstream`` (the gate's result) means for this flag: the final result when
        the gate blocks, else the reason it passes with."""
        return self.results.gate_outcome(
            gate.flag.key, gate.variant, gate.flag.off_variant, upstream
        )

    def own_steps_constant(self) -> bool:
        """Whether the flag's own steps (after its gates) give every context one result."""
        return not self.enabled or (
            not self.targets and not self.rules and not self.split.needs_unit()
        )
