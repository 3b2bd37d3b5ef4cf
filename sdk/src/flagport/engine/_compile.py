"""Compile a snapshot document into an immutable, fast evaluator (DESIGN.md section 3).

Compilation happens once per snapshot version. Every flag becomes a :class:`CompiledFlag`
whose results for the common outcomes are built ahead of time, so the hot path allocates
nothing: a lookup, a hash and a comparison for a plain percentage rollout.

A flag that fails to compile (unknown variant, unknown segment, prerequisite cycle, ...)
serves its off variant with error code ``PARSE_ERROR`` and is listed in
``CompiledSnapshot.problems``; ``strict=True`` raises instead (the admin API validates that
way, so bad input never reaches the store).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import mmh3

from flagport._exceptions import InvalidDocumentError
from flagport.engine._bucketing import BUCKETS, threshold
from flagport.engine._conditions import Matcher, compile_condition, int_text
from flagport.engine.models import (
    BUCKETING_VERSION,
    KEY_PATTERN,
    MAX_KEY_LENGTH,
    MAX_WEIGHT_TOTAL,
    ErrorCode,
    EvaluationResult,
    Flag,
    Reason,
    Rule,
    Segment,
    SnapshotDocument,
)

__all__ = ["CompiledFlag", "CompiledSnapshot", "compile_snapshot", "flag_path", "validate_key"]

Context = Mapping[str, Any]
Memo = dict[str, EvaluationResult]

_KEY_RE = re.compile(KEY_PATTERN)
_STATIC = Reason.STATIC
_SPLIT = Reason.SPLIT
_MATCH = Reason.TARGETING_MATCH
_ERROR = Reason.ERROR
_murmur = mmh3.hash


def _valid_utf8(text: str) -> bool:
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
    if not (0 <= value <= 100) or math.isnan(value):
        raise InvalidDocumentError(f"percentage must be between 0 and 100, got {value!r}", path)
    scaled = value * 1000
    if abs(scaled - round(scaled)) > 1e-6:
        raise InvalidDocumentError(f"percentage {value!r} has more than 3 decimals", path)
    return threshold(value)


class _Split:
    """Percentage inclusion plus an optional weighted choice of variant (seed 1)."""

    __slots__ = ("cumulative", "threshold", "total", "variants")

    def __init__(
        self, bound: int, weights: dict[str, int] | None, path: str, variants: Mapping[str, Any]
    ) -> None:
        self.threshold = bound
        self.cumulative: list[int] = []
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

    @property
    def weighted(self) -> bool:
        return self.total > 0

    def needs_unit(self) -> bool:
        return self.weighted or 0 < self.threshold < BUCKETS

    def pick(self, prefix: str, unit: str) -> tuple[bool, str | None]:
        """(included, weighted variant or None). ``prefix`` is ``salt + ":"``."""
        if (
            self.threshold < BUCKETS
            and (mmh3.hash(prefix + unit, 0, False) * BUCKETS) >> 32 >= self.threshold
        ):
            return False, None
        if not self.total:
            return True, None
        point = (mmh3.hash(prefix + unit, 1, False) * self.total) >> 32
        for bound, name in zip(self.cumulative, self.variants, strict=True):
            if point < bound:
                return True, name
        return True, self.variants[-1]  # pragma: no cover - point < total always


class _CompiledRule:
    __slots__ = ("conditions", "name", "split", "variant")

    def __init__(
        self, conditions: list[Matcher], variant: str | None, split: _Split | None, name: str | None
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


class _Gate:
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


def values_say_on(variants: Mapping[str, Any], off_variant: str) -> bool:
    """Whether a flag's values alone say whether it is on: every value is ``true`` except
    the off variant's ``false`` (plain on/off flags). The results of any other flag carry
    ``metadata.on``, so that clients need not know the flag's off variant."""
    return all(value is (name != off_variant) for name, value in variants.items())


class _Results:
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
        """Step 6's last sentence: an on result is ``STATIC`` only if the whole chain was."""
        if (
            chain_reason is not _STATIC
            and own.reason is _STATIC
            and own.variant != self.off_variant
        ):
            return self.result(own.variant, chain_reason)  # type: ignore[arg-type]
        return own


class CompiledFlag:
    """One flag, ready to evaluate. Immutable once its snapshot is built."""

    __slots__ = (
        "_results",
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
        "rules",
        "split",
        "step",
        "targets",
        "variants",
    )

    #: ``evaluate(context, now=None, memo=None) -> EvaluationResult``: a specialised
    #: closure for plain flags, the general method otherwise.
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
        self.gates: list[_Gate] = []
        #: Every ancestor and prerequisite, before folding drops the constant ones
        #: (``explain`` shows them all).
        self.declared_gates: list[_Gate] = []
        self.targets: dict[str, str] = {}
        self.rules: list[_CompiledRule] = []
        self.split = _Split(BUCKETS, None, "", {})
        self.broken: InvalidDocumentError | None = None
        #: The result when it cannot depend on the context (set by :meth:`fold`).
        self.constant: EvaluationResult | None = None
        self._results = _Results(key, flag)
        self.evaluate = self.step = self._evaluate
        #: The gate's key when this flag's result is a function of that gate's alone.
        self.follows: str | None = None

    # -- results ------------------------------------------------------------------------

    def result(self, variant: str, reason: Reason, gated_by: str | None = None) -> EvaluationResult:
        """The (cached, shared) result serving ``variant`` for ``reason``."""
        return self._results.result(variant, reason, gated_by)

    def error(self, code: ErrorCode, message: str, gated_by: str | None = None) -> EvaluationResult:
        return self._results.error(code, message, gated_by)

    def _broken_result(self) -> EvaluationResult:
        """A flag that failed to compile serves its off variant, flagged PARSE_ERROR."""
        cached = self._results.cache.get(("broken",))
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
            self._results.cache[("broken",)] = cached
        return cached

    def _unit_missing(self) -> EvaluationResult:
        return self._results.unit_missing()

    def _unit_invalid(self) -> EvaluationResult:
        return self._results.unit_invalid()

    # -- evaluation ---------------------------------------------------------------------

    def _evaluate(
        self, context: Context, now: float | None = None, memo: Memo | None = None
    ) -> EvaluationResult:
        if self.broken is not None:
            return self._broken_result()
        chain_reason = _STATIC
        for gate in self.gates:
            upstream = memo.get(gate.flag.key) if memo is not None else None
            if upstream is None:
                upstream = gate.flag.evaluate(context, now, memo)
                if memo is not None:
                    memo[gate.flag.key] = upstream
            gated_by = (
                upstream.metadata.get("gatedBy", gate.flag.key)
                if upstream.metadata
                else gate.flag.key
            )
            if upstream.error_code is not None:
                return self.error(upstream.error_code, upstream.error_message or "", gated_by)
            if not gate.passes(upstream):
                return self.result(self.off_variant, upstream.reason, gated_by)
            if chain_reason is _STATIC:
                chain_reason = upstream.reason
        own = self._evaluate_own(context, now)
        if (
            chain_reason is not _STATIC
            and own.reason is _STATIC
            and own.variant != self.off_variant
        ):
            return self.result(own.variant, chain_reason)  # type: ignore[arg-type]
        return own

    def _evaluate_own(self, context: Context, now: float | None) -> EvaluationResult:
        """Steps 3-6 of DESIGN.md section 3 for this flag alone."""
        if not self.enabled:
            return self.result(self.off_variant, Reason.DISABLED)
        if self.targets:
            key = context.get("targetingKey")
            if type(key) is int:
                key = int_text(key)
            if type(key) is str:
                variant = self.targets.get(key)
                if variant is not None:
                    return self.result(variant, _MATCH)
        for rule in self.rules:
            if rule.matches(context, now):
                if rule.split is None:
                    return self.result(rule.variant, _MATCH)  # type: ignore[arg-type]
                return self._split(rule.split, context, _MATCH)
        return self._split(self.split, context, _SPLIT)

    def _split(self, split: _Split, context: Context, reason: Reason) -> EvaluationResult:
        if not split.needs_unit():
            if split.threshold == 0:
                return self.result(self.off_variant, _STATIC if reason is _SPLIT else reason)
            return self.result(self.on_variant, _STATIC if reason is _SPLIT else reason)
        unit = context.get(self.bucket_by)
        kind = type(unit)
        if kind is not str:
            if kind is int:
                unit = int_text(unit)  # type: ignore[arg-type]
                if unit is None:
                    return self._unit_invalid()
            elif unit is None:
                return self._unit_missing()
            else:
                return self._unit_invalid()
        elif not unit:
            return self._unit_missing()
        elif not unit.isascii() and not _valid_utf8(unit):
            return self._unit_invalid()
        included, variant = split.pick(self.prefix, unit)
        if not included:
            return self.result(self.off_variant, reason)
        return self.result(variant or self.on_variant, reason)

    def gate_outcome(self, gate: _Gate, upstream: EvaluationResult) -> EvaluationResult | Reason:
        """What ``upstream`` (the gate's result) means for this flag: the final result when
        the gate blocks, else the reason it passes with."""
        return self._results.gate_outcome(
            gate.flag.key, gate.variant, gate.flag.off_variant, upstream
        )

    def _combine(self, own: EvaluationResult, chain_reason: Reason) -> EvaluationResult:
        return self._results.combine(own, chain_reason)

    def fold(self) -> None:
        """Drop gates that always pass with ``STATIC`` (they change nothing) and note when
        the whole flag is context-independent: its own steps are, or a constant gate that
        comes first always blocks it. Gates must be folded first (topological order), so a
        chain of plain 100 % parents, or the children of a disabled parent, cost nothing
        per evaluation."""
        self.declared_gates = list(self.gates)
        if self.broken is not None:
            self.constant = self._broken_result()
            return
        kept: list[_Gate] = []
        for gate in self.gates:
            upstream = gate.flag.constant
            if upstream is not None:
                outcome = self.gate_outcome(gate, upstream)
                if outcome is _STATIC:
                    continue
                if not kept and type(outcome) is EvaluationResult:
                    # ``gates`` stays unfolded: ``explain`` shows the blocking gate.
                    self.constant = outcome
                    return
            kept.append(gate)
        self.gates = kept
        own_constant = not self.enabled or (
            not self.targets and not self.rules and not self.split.needs_unit()
        )
        if own_constant and all(gate.flag.constant is not None for gate in kept):
            # Gates that always pass, but with a reason other than STATIC, count too.
            self.constant = self._evaluate({}, None) if kept else self._evaluate_own({}, None)

    def specialise(self) -> None:
        """Install ``evaluate`` (and ``step``, what ``evaluate_all`` runs) as closures built
        for this flag's shape, with every result they can serve prepared ahead of time.

        Gates must be specialised first (topological order): their closures are captured.
        ``_evaluate`` stays the readable reference; the closures must agree with it (a
        property test checks that). The closures come from small module-level factories so
        that each captures only what it uses: compiling 10,000 flags allocates few objects
        for the garbage collector to walk.
        """
        if self.constant is not None:
            self.evaluate = self.step = _answer(self.constant)
            return
        own = self._own_evaluator()
        if not self.gates:
            self.evaluate = self.step = own
            return
        gated = _Gated(self, own)
        if len(self.gates) > 1:
            self.evaluate = self.step = gated.evaluate_many
        elif gated.own_constant is not None:
            # A child whose own steps are constant (the portal's child at 100 %): its
            # result is a function of the parent's result alone.
            self.evaluate, self.step = gated.evaluate_follower, gated.step_follower
            if self.gates[0].flag.constant is None:
                self.follows = self.gates[0].flag.key
        else:
            self.evaluate, self.step = gated.evaluate_one, gated.step_one

    def _own_evaluator(self) -> Callable[..., EvaluationResult]:
        """Steps 3-6 of DESIGN.md section 3 as one closure ``(context, now=None, memo=None)``."""
        if not self.enabled:
            return _answer(self.result(self.off_variant, Reason.DISABLED))
        final = self._split_evaluator(self.split, _SPLIT)
        if not self.targets and not self.rules:
            return final
        targeted = {unit: self.result(variant, _MATCH) for unit, variant in self.targets.items()}
        rules: list[tuple[tuple[Matcher, ...], Any, bool]] = []
        for rule in self.rules:
            if rule.split is None:
                served: Any = self.result(rule.variant, _MATCH)  # type: ignore[arg-type]
                rules.append((tuple(rule.conditions), served, True))
            else:
                served = self._split_evaluator(rule.split, _MATCH)
                rules.append((tuple(rule.conditions), served, False))
        return _targeted(targeted, rules, final)

    def _split_evaluator(self, split: _Split, reason: Reason) -> Callable[..., EvaluationResult]:
        """``_split`` for one split and reason as a closure, every result prepared."""
        if not split.needs_unit():
            return _answer(
                self.result(
                    self.on_variant if split.threshold else self.off_variant,
                    _STATIC if reason is _SPLIT else reason,
                )
            )
        off = self.result(self.off_variant, reason)
        if not split.weighted:
            on = self.result(self.on_variant, reason)
            return _Rollout(self, split.threshold, on, off).evaluate
        picks = [
            (limit, self.result(name, reason))
            for limit, name in zip(split.cumulative, split.variants, strict=True)
        ]
        return _Weighted(self, split.threshold, split.total, picks, off).evaluate


class _GateOutcomes:
    """What each result of one gate means for the gated flag, by the result's id, filled
    on first sight. A gate serves a handful of shared results, cached for the snapshot's
    lifetime (see :class:`_Results`), so their ids are stable keys. With ``own_constant``
    (the gated flag's own steps are constant) a passing outcome is already combined into
    the gated flag's result."""

    __slots__ = ("gate_key", "get", "own_constant", "required", "results", "table", "upstream_off")

    def __init__(
        self, results: _Results, gate: _Gate, own_constant: EvaluationResult | None
    ) -> None:
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
        # Only a STATIC own result takes the chain's reason (DESIGN.md section 3).
        own_static = flag.enabled and not flag.split.needs_unit()
        self.combine = flag._results.combine if own_static else None
        self.own_constant = (
            flag._evaluate_own({}, None)
            if not flag.enabled or (own_static and not flag.targets and not flag.rules)
            else None
        )
        single = len(flag.gates) == 1
        self.gates = [
            (
                gate.flag.key,
                gate.flag.evaluate,
                _GateOutcomes(flag._results, gate, self.own_constant if single else None),
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

    __slots__ = ("bound", "bucket_by", "off", "on", "prefix", "results")

    def __init__(
        self, flag: CompiledFlag, bound: int, on: EvaluationResult, off: EvaluationResult
    ) -> None:
        self.results = flag._results
        self.bucket_by = flag.bucket_by
        self.prefix = flag.prefix
        self.bound = bound
        self.on = on
        self.off = off

    def evaluate(
        self, context: Context, now: float | None = None, memo: Memo | None = None
    ) -> EvaluationResult:
        unit = context.get(self.bucket_by)
        if type(unit) is not str or not unit or not unit.isascii():
            unit = _unit_text(unit)
            if type(unit) is not str:
                return self.results.unit_missing() if unit is None else self.results.unit_invalid()
        if (_murmur(self.prefix + unit, 0, False) * BUCKETS) >> 32 < self.bound:
            return self.on
        return self.off


class _Weighted:
    """A split with weights: included units (seed 0) pick a variant with seed 1."""

    __slots__ = ("bound", "bucket_by", "off", "picks", "prefix", "results", "total")

    def __init__(
        self,
        flag: CompiledFlag,
        bound: int,
        total: int,
        picks: list[tuple[int, EvaluationResult]],
        off: EvaluationResult,
    ) -> None:
        self.results = flag._results
        self.bucket_by = flag.bucket_by
        self.prefix = flag.prefix
        self.bound = bound
        self.total = total
        self.picks = picks
        self.off = off

    def evaluate(
        self, context: Context, now: float | None = None, memo: Memo | None = None
    ) -> EvaluationResult:
        unit = context.get(self.bucket_by)
        if type(unit) is not str or not unit or not unit.isascii():
            unit = _unit_text(unit)
            if type(unit) is not str:
                return self.results.unit_missing() if unit is None else self.results.unit_invalid()
        text = self.prefix + unit
        bound = self.bound
        if bound < BUCKETS and (_murmur(text, 0, False) * BUCKETS) >> 32 >= bound:
            return self.off
        point = (_murmur(text, 1, False) * self.total) >> 32
        for limit, result in self.picks:
            if point < limit:
                return result
        return self.picks[-1][1]  # pragma: no cover - point < total always


def _unit_text(unit: Any) -> str | bool | None:
    """The bucketing unit as text; ``None`` when missing (absent or ``""``), ``False`` when
    invalid (not a string or an integer, an integer too long to print, lone surrogates)."""
    kind = type(unit)
    if kind is str:
        if not unit:
            return None
        return unit if _valid_utf8(unit) else False
    if kind is int:
        text = int_text(unit)
        return False if text is None else text
    if unit is None:
        return None
    return False


class _Followers:
    """A flag's ``evaluate_all`` step that also fills in every flag whose result follows
    from this one's alone (transitively), with one ``dict.update`` from a bundle prepared
    per result of this flag (ids are stable: see :class:`_GateOutcomes`)."""

    __slots__ = ("bundles", "chain", "key", "run")

    def __init__(
        self,
        key: str,
        run: Callable[..., EvaluationResult],
        chain: list[tuple[str, Callable[..., EvaluationResult]]],
    ) -> None:
        self.key = key
        self.run = run
        self.chain = chain  # (key, step) in topological order
        self.bundles: dict[int, dict[str, EvaluationResult]] = {}

    def step(self, context: Context, now: float | None, memo: Memo) -> EvaluationResult:
        result = self.run(context, now, memo)
        bundle = self.bundles.get(id(result))
        if bundle is None:
            bundle = self._bundle(result)
        memo.update(bundle)
        return result

    def _bundle(self, result: EvaluationResult) -> dict[str, EvaluationResult]:
        # A follower's step reads only its gate's result from the memo.
        scratch: Memo = {self.key: result}
        for key, step in self.chain:
            scratch[key] = step(None, None, scratch)
        del scratch[self.key]
        self.bundles[id(result)] = scratch
        return scratch


def _not_found(key: str) -> EvaluationResult:
    return EvaluationResult(
        key=key,
        value=None,
        variant=None,
        reason=_ERROR,
        error_code=ErrorCode.FLAG_NOT_FOUND,
        error_message=f"flag {key!r} not found",
    )


class CompiledSnapshot:
    """An immutable, compiled snapshot: what every server worker and ``LocalClient``
    evaluates from. Build it with :func:`compile_snapshot`."""

    __slots__ = ("_flags", "_order", "_plan", "_template", "document", "problems", "version")

    def __init__(
        self,
        document: SnapshotDocument,
        flags: dict[str, CompiledFlag],
        order: list[CompiledFlag],
        problems: list[InvalidDocumentError],
    ) -> None:
        self.document = document
        self.version = document.version
        self._flags = flags
        self._order = order
        self.problems = problems
        # evaluate_all copies the template (every key in topological order, constant flags
        # already answered) and runs one step per remaining flag, in the same order. Flags
        # whose result follows from one gate's alone (children at 100 % of a split parent)
        # get no step: their gate's step fills them in, see :class:`_Followers`.
        self._template: dict[str, EvaluationResult | None] = {
            flag.key: flag.constant for flag in order
        }
        followers: dict[str, list[CompiledFlag]] = {}
        for flag in order:
            if flag.constant is None and flag.follows is not None:
                followers.setdefault(flag.follows, []).append(flag)
        position = {key: index for index, key in enumerate(self._template)}
        self._plan: list[tuple[str, Callable[..., EvaluationResult]]] = []
        for flag in order:
            if flag.constant is not None or flag.follows is not None:
                continue
            step = flag.step
            if flag.key in followers:
                chain: list[tuple[str, Callable[..., EvaluationResult]]] = []
                pending = [flag.key]
                while pending:
                    for follower in followers.get(pending.pop(), ()):
                        chain.append((follower.key, follower.step))
                        pending.append(follower.key)
                chain.sort(key=lambda item: position[item[0]])
                step = _Followers(flag.key, step, chain).step
            self._plan.append((flag.key, step))

    def __contains__(self, key: object) -> bool:
        return key in self._flags

    def __len__(self) -> int:
        return len(self._flags)

    def __iter__(self) -> Iterator[str]:
        return iter(self._flags)

    def flag(self, key: str) -> CompiledFlag | None:
        return self._flags.get(key)

    def evaluate(self, key: str, context: Context, now: float | None = None) -> EvaluationResult:
        """Evaluate ``key`` for ``context``. Never raises; an unknown key is ``FLAG_NOT_FOUND``.

        ``now`` (seconds since the epoch) is what ``before``/``after`` conditions on ``$now``
        compare with; the engine never reads the clock itself.
        """
        flag = self._flags.get(key)
        if flag is None:
            return _not_found(key)
        return flag.evaluate(context, now)

    def evaluate_all(
        self, context: Context, now: float | None = None
    ) -> dict[str, EvaluationResult]:
        """Evaluate every flag for ``context``; each ancestor is evaluated once."""
        memo = self._template.copy()
        for key, step in self._plan:
            memo[key] = step(context, now, memo)
        return memo  # type: ignore[return-value]  # every placeholder is filled


def compile_snapshot(
    document: SnapshotDocument,
    *,
    strict: bool = False,
    unreadable_flags: Mapping[str, str] | None = None,
    unreadable_segments: Mapping[str, str] | None = None,
) -> CompiledSnapshot:
    """Compile ``document``. With ``strict=True`` the first problem raises
    :class:`InvalidDocumentError` (its ``path`` names the field); otherwise a broken flag
    serves ``PARSE_ERROR`` and is listed in ``problems``.

    ``unreadable_flags`` and ``unreadable_segments`` (key -> why) name what a store holds but
    cannot decode. Such a flag is not in ``document`` but is served, as ``PARSE_ERROR``, so
    that its children and dependants stay gated by it instead of turning into top-level
    flags; flags that use such a segment are broken too."""
    if document.bucketing != BUCKETING_VERSION:
        raise InvalidDocumentError(
            f"unsupported bucketing version {document.bucketing}; "
            f"this engine implements {BUCKETING_VERSION}",
            "$.bucketing",
        )
    problems: list[InvalidDocumentError] = []

    def report(problem: InvalidDocumentError, flag: CompiledFlag | None) -> None:
        if strict:
            raise problem
        problems.append(problem)
        if flag is not None and flag.broken is None:
            flag.broken = problem

    segment_matchers: dict[str, Matcher] = {}
    for name, segment in document.segments.items():
        try:
            segment_matchers[name] = _compile_segment(name, segment)
        except InvalidDocumentError as problem:
            report(problem, None)
            segment_matchers[name] = _never

    unreadable_segments = unreadable_segments or {}
    for name, why in unreadable_segments.items():
        report(
            InvalidDocumentError(f"stored segment cannot be read: {why}", f'$.segments["{name}"]'),
            None,
        )

    def lookup_segment(name: str) -> Matcher:
        matcher = segment_matchers.get(name)
        if matcher is None:
            if name in unreadable_segments:
                raise InvalidDocumentError(f"segment {name!r} cannot be read", "$.segments")
            raise InvalidDocumentError(f"unknown segment {name!r}", "$.segments")
        return matcher

    flags: dict[str, CompiledFlag] = {}
    for key, why in (unreadable_flags or {}).items():
        placeholder = CompiledFlag(key, _UNREADABLE)
        flags[key] = placeholder
        report(
            InvalidDocumentError(f"stored flag cannot be read: {why}", flag_path(key)), placeholder
        )
    for key, flag in document.flags.items():
        compiled = CompiledFlag(key, flag)
        flags[key] = compiled
        try:
            validate_key(key, flag_path(key))
            _compile_body(compiled, flag, lookup_segment)
        except InvalidDocumentError as problem:
            report(problem, compiled)

    for compiled in flags.values():
        try:
            _link_gates(compiled, flags)
        except InvalidDocumentError as problem:
            report(problem, compiled)

    order = _topological_order(flags, report)
    for compiled in order:
        compiled.fold()
    for compiled in order:
        compiled.specialise()
    return CompiledSnapshot(document, flags, order, problems)


#: What an unreadable stored flag compiles from: its off variant is served, with PARSE_ERROR.
_UNREADABLE = Flag()


def _never(context: Context, now: float | None) -> bool:
    return False


def _compile_segment(name: str, segment: Segment) -> Matcher:
    path = f'$.segments["{name}"]'
    validate_key(name, path)
    included = frozenset(segment.included)
    excluded = frozenset(segment.excluded)

    def no_nested_segments(inner: str) -> Matcher:
        raise InvalidDocumentError(
            "a segment cannot refer to another segment", f"{path}.conditions"
        )

    conditions = [
        compile_condition(condition, f"{path}.conditions[{index}]", no_nested_segments)
        for index, condition in enumerate(segment.conditions)
    ]

    def in_segment(context: Context, now: float | None) -> bool:
        key = context.get("targetingKey")
        if type(key) is int:
            key = int_text(key)
        if type(key) is str:
            if key in excluded:
                return False
            if key in included:
                return True
        if not conditions:
            return False
        return all(condition(context, now) for condition in conditions)

    return in_segment


def _compile_body(compiled: CompiledFlag, flag: Flag, segments: Callable[[str], Matcher]) -> None:
    path = flag_path(compiled.key)
    if flag.salt is not None and not flag.salt:
        raise InvalidDocumentError(
            "salt must not be empty (leave it out to use the flag key)", f"{path}.salt"
        )
    if flag.salt is not None and not _valid_utf8(flag.salt):
        raise InvalidDocumentError("salt must be valid Unicode text", f"{path}.salt")
    variants = flag.variants
    if not variants:
        raise InvalidDocumentError("a flag needs at least one variant", f"{path}.variants")
    for name, value in variants.items():
        if isinstance(value, list):
            raise InvalidDocumentError(
                "variant values cannot be arrays (OFREP); wrap them in an object",
                f'{path}.variants["{name}"]',
            )
    for field in ("on_variant", "off_variant"):
        name = getattr(flag, field)
        if name not in variants:
            raise InvalidDocumentError(
                f"{field} {name!r} is not one of the variants {sorted(variants)}", f"{path}.{field}"
            )
    compiled.split = _Split(
        check_percentage(flag.percentage, f"{path}.percentage"), flag.weights, path, variants
    )

    for variant, keys in flag.targets.items():
        if variant not in variants:
            raise InvalidDocumentError(
                f"targets name unknown variant {variant!r}", f'{path}.targets["{variant}"]'
            )
        for unit in keys:
            compiled.targets.setdefault(unit, variant)

    for index, rule in enumerate(flag.rules):
        compiled.rules.append(_compile_rule(rule, f"{path}.rules[{index}]", variants, segments))


def _compile_rule(
    rule: Rule, path: str, variants: Mapping[str, Any], segments: Callable[[str], Matcher]
) -> _CompiledRule:
    matchers = []
    for index, condition in enumerate(rule.conditions):
        condition_path = f"{path}.conditions[{index}]"
        try:
            matchers.append(compile_condition(condition, condition_path, segments))
        except InvalidDocumentError as problem:
            if problem.path == "$.segments":  # unknown segment: point at the condition
                raise InvalidDocumentError(problem.problem, f"{condition_path}.values") from None
            raise
    split: _Split | None = None
    if rule.variant is not None:
        if rule.percentage is not None or rule.weights is not None:
            raise InvalidDocumentError(
                "a rule serves either a variant or a percentage/weights split, not both", path
            )
        if rule.variant not in variants:
            raise InvalidDocumentError(f"unknown variant {rule.variant!r}", f"{path}.variant")
    else:
        if rule.percentage is None and rule.weights is None:
            raise InvalidDocumentError("a rule needs a variant, a percentage or weights", path)
        bound = check_percentage(
            100.0 if rule.percentage is None else rule.percentage, f"{path}.percentage"
        )
        split = _Split(bound, rule.weights, path, variants)
    return _CompiledRule(matchers, rule.variant, split, rule.name)


def _link_gates(compiled: CompiledFlag, flags: Mapping[str, CompiledFlag]) -> None:
    key = compiled.key
    parts = key.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        parent = flags.get(".".join(parts[:depth]))
        if parent is not None:
            compiled.gates.append(_Gate(parent, "parent", None))
            break
    for index, prerequisite in enumerate(compiled.flag.prerequisites):
        path = f"{flag_path(key)}.prerequisites[{index}]"
        upstream = flags.get(prerequisite.key)
        if upstream is None:
            raise InvalidDocumentError(
                f"unknown prerequisite flag {prerequisite.key!r}", f"{path}.key"
            )
        if prerequisite.variant is not None and prerequisite.variant not in upstream.variants:
            raise InvalidDocumentError(
                f"flag {prerequisite.key!r} has no variant {prerequisite.variant!r}",
                f"{path}.variant",
            )
        compiled.gates.append(_Gate(upstream, "prerequisite", prerequisite.variant))


def _topological_order(
    flags: dict[str, CompiledFlag],
    report: Callable[[InvalidDocumentError, CompiledFlag | None], None],
) -> list[CompiledFlag]:
    """Gates before the flags they gate; a cycle breaks every flag on it (PARSE_ERROR)."""
    order: list[CompiledFlag] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for root in flags.values():
        if state.get(root.key):
            continue
        stack: list[tuple[CompiledFlag, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node.key] = 1
                path.append(node.key)
            if index < len(node.gates):
                stack.append((node, index + 1))
                upstream = node.gates[index].flag
                mark = state.get(upstream.key)
                if mark == 1:
                    cycle = [*path[path.index(upstream.key) :], upstream.key]
                    problem = InvalidDocumentError(
                        "prerequisite cycle: " + " -> ".join(cycle),
                        f"{flag_path(node.key)}.prerequisites",
                    )
                    for member in cycle:
                        report(problem, flags[member])
                    # Cut the edge so evaluation terminates; the flags are broken anyway.
                    node.gates = [g for g in node.gates if g.flag is not upstream]
                    stack[-1] = (node, index)
                elif mark is None:
                    stack.append((upstream, 0))
                continue
            state[node.key] = 2
            path.pop()
            order.append(node)
    return order
