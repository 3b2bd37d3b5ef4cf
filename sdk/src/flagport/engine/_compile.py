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
    MAX_TARGETS,
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
    if not _KEY_RE.match(key):
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


class CompiledFlag:
    """One flag, ready to evaluate. Immutable once its snapshot is built."""

    __slots__ = (
        "_results",
        "broken",
        "bucket_by",
        "constant",
        "enabled",
        "evaluate",
        "flag",
        "gates",
        "key",
        "off_variant",
        "on_variant",
        "prefix",
        "rules",
        "split",
        "targets",
        "variants",
    )

    #: ``evaluate(context, now=None, memo=None) -> EvaluationResult``: a specialised
    #: closure for plain flags, the general method otherwise.
    evaluate: Callable[..., EvaluationResult]

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
        self.targets: dict[str, str] = {}
        self.rules: list[_CompiledRule] = []
        self.split = _Split(BUCKETS, None, "", {})
        self.broken: InvalidDocumentError | None = None
        #: The result when it cannot depend on the context (set by :meth:`fold`).
        self.constant: EvaluationResult | None = None
        self._results: dict[tuple[Any, ...], EvaluationResult] = {}
        self.evaluate = self._evaluate

    # -- results ------------------------------------------------------------------------

    def result(self, variant: str, reason: Reason, gated_by: str | None = None) -> EvaluationResult:
        """The (cached, shared) result serving ``variant`` for ``reason``."""
        cache_key = (variant, reason, gated_by)
        cached = self._results.get(cache_key)
        if cached is None:
            cached = EvaluationResult(
                key=self.key,
                value=self.variants.get(variant),
                variant=variant,
                reason=reason,
                metadata=None if gated_by is None else {"gatedBy": gated_by},
            )
            self._results[cache_key] = cached
        return cached

    def error(self, code: ErrorCode, message: str, gated_by: str | None = None) -> EvaluationResult:
        cache_key = (code, message, gated_by)
        cached = self._results.get(cache_key)
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
            self._results[cache_key] = cached
        return cached

    def _broken_result(self) -> EvaluationResult:
        """A flag that failed to compile serves its off variant, flagged PARSE_ERROR."""
        cached = self._results.get(("broken",))
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
            self._results[("broken",)] = cached
        return cached

    def _unit_missing(self) -> EvaluationResult:
        return self.error(
            ErrorCode.TARGETING_KEY_MISSING,
            f"flag {self.key!r} splits by {self.bucket_by!r}, which the context does not provide",
        )

    def _unit_invalid(self) -> EvaluationResult:
        return self.error(
            ErrorCode.INVALID_CONTEXT,
            f"flag {self.key!r} splits by {self.bucket_by!r}, which must be a string or an integer",
        )

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

    def fold(self) -> None:
        """Drop gates that always pass with ``STATIC`` (they change nothing) and note when
        the whole flag is context-independent. Gates must be folded first (topological
        order), so a chain of plain 100 % parents costs nothing per evaluation."""
        if self.broken is not None:
            self.constant = self._broken_result()
            return
        kept = []
        for gate in self.gates:
            upstream = gate.flag.constant
            if (
                upstream is not None
                and upstream.error_code is None
                and upstream.reason is _STATIC
                and gate.passes(upstream)
            ):
                continue
            kept.append(gate)
        self.gates = kept
        own_constant = not self.enabled or (
            not self.targets and not self.rules and not self.split.needs_unit()
        )
        if not kept and own_constant:
            self.constant = self._evaluate_own({}, None)

    def specialise(self) -> None:
        """Install a closure for plain percentage flags: the hot path of the portal."""
        if self.gates or self.targets or self.rules or self.broken is not None:
            return
        if not self.enabled:
            disabled = self.result(self.off_variant, Reason.DISABLED)
            self.evaluate = lambda context, now=None, memo=None: disabled
            return
        split = self.split
        if not split.needs_unit():
            static = self.result(self.on_variant if split.threshold else self.off_variant, _STATIC)
            self.evaluate = lambda context, now=None, memo=None: static
            return
        if split.weighted:
            return
        bucket_by, prefix, bound = self.bucket_by, self.prefix, split.threshold
        on = self.result(self.on_variant, _SPLIT)
        off = self.result(self.off_variant, _SPLIT)
        missing, invalid = self._unit_missing(), self._unit_invalid()
        murmur = mmh3.hash

        def evaluate_rollout(
            context: Context, now: float | None = None, memo: Memo | None = None
        ) -> EvaluationResult:
            unit = context.get(bucket_by)
            if type(unit) is not str:
                if type(unit) is int:
                    unit = int_text(unit)
                    if unit is None:
                        return invalid
                elif unit is None:
                    return missing
                else:
                    return invalid
            elif not unit:
                return missing
            elif not unit.isascii() and not _valid_utf8(unit):
                return invalid
            return on if (murmur(prefix + unit, 0, False) * BUCKETS) >> 32 < bound else off

        self.evaluate = evaluate_rollout


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

    __slots__ = ("_flags", "_order", "document", "problems", "version")

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
        memo: Memo = {}
        for flag in self._order:
            if flag.key not in memo:
                memo[flag.key] = flag.evaluate(context, now, memo)
        return memo


def compile_snapshot(document: SnapshotDocument, *, strict: bool = False) -> CompiledSnapshot:
    """Compile ``document``. With ``strict=True`` the first problem raises
    :class:`InvalidDocumentError` (its ``path`` names the field); otherwise a broken flag
    serves ``PARSE_ERROR`` and is listed in ``problems``."""
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

    def lookup_segment(name: str) -> Matcher:
        matcher = segment_matchers.get(name)
        if matcher is None:
            raise InvalidDocumentError(f"unknown segment {name!r}", "$.segments")
        return matcher

    flags: dict[str, CompiledFlag] = {}
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
    for compiled in flags.values():
        compiled.specialise()
    return CompiledSnapshot(document, flags, order, problems)


def _never(context: Context, now: float | None) -> bool:
    return False


def _compile_segment(name: str, segment: Segment) -> Matcher:
    path = f'$.segments["{name}"]'
    validate_key(name, path)
    for field, members in (("included", segment.included), ("excluded", segment.excluded)):
        if len(members) > MAX_TARGETS:
            raise InvalidDocumentError(f"at most {MAX_TARGETS} targeting keys", f"{path}.{field}")
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
        if len(keys) > MAX_TARGETS:
            raise InvalidDocumentError(
                f"at most {MAX_TARGETS} targeting keys per variant", f'{path}.targets["{variant}"]'
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
