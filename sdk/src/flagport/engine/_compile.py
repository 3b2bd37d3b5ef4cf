"""Compile a snapshot document: validate each flag and segment, link each flag to its gates,
order the flags so that gates come first, fold what cannot depend on the context, and
install the specialised evaluators. Compilation happens once per snapshot version.

A flag that fails to compile (unknown variant, unknown segment, prerequisite cycle, ...)
serves its off variant with error code ``PARSE_ERROR`` and is listed in
``CompiledSnapshot.problems``; ``strict=True`` raises instead (the admin API validates that
way, so bad input never reaches the store).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flagport._exceptions import InvalidDocumentError
from flagport.engine._common import (
    Context,
    check_percentage,
    flag_path,
    valid_utf8,
    validate_key,
)
from flagport.engine._conditions import NOW_ATTRIBUTE, Matcher, compile_condition, int_text
from flagport.engine._flag import CompiledFlag, CompiledRule, Gate, Split
from flagport.engine._reference import reference_evaluate, reference_own
from flagport.engine._snapshot import CompiledSnapshot
from flagport.engine._specialised import specialise
from flagport.engine.models import (
    BUCKETING_VERSION,
    Condition,
    EvaluationResult,
    Flag,
    Operator,
    Reason,
    Rule,
    Segment,
    SnapshotDocument,
)

__all__ = ["compile_snapshot"]

_STATIC = Reason.STATIC


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
    timed_segments = {
        name
        for name, segment in document.segments.items()
        if any(condition.attribute == NOW_ATTRIBUTE for condition in segment.conditions)
    }
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
        _fold(compiled)
        compiled.reads_clock = compiled.constant is None and (
            _rules_read_clock(compiled.flag.rules, timed_segments)
            or any(gate.flag.reads_clock for gate in compiled.gates)
        )
    for compiled in order:
        specialise(compiled)
    return CompiledSnapshot(document, flags, order, problems)


def _fold(flag: CompiledFlag) -> None:
    """Drop gates that always pass with ``STATIC`` (they change nothing) and note what
    cannot depend on the context: the result of the flag's own steps
    (``serves_everyone``), and the whole result (``constant``) when its own steps are
    constant and so are its gates, or when a constant gate that comes first always blocks
    it. Gates must be folded first (topological order), so a chain of plain 100 % parents,
    or the children of a disabled parent, cost nothing per evaluation."""
    flag.declared_gates = list(flag.gates)
    if flag.broken is not None:
        flag.constant = flag.broken_result()
        return
    own_constant = flag.own_steps_constant()
    if own_constant:
        flag.serves_everyone = reference_own(flag, {}, None)
    kept: list[Gate] = []
    for gate in flag.gates:
        upstream = gate.flag.constant
        if upstream is not None:
            outcome = flag.gate_outcome(gate, upstream)
            if outcome is _STATIC:
                continue
            if not kept and type(outcome) is EvaluationResult:
                # ``gates`` stays unfolded: ``explain`` shows the blocking gate.
                flag.constant = outcome
                return
        kept.append(gate)
    flag.gates = kept
    if own_constant and all(gate.flag.constant is not None for gate in kept):
        # Gates that always pass, but with a reason other than STATIC, count too.
        flag.constant = reference_evaluate(flag, {}, None) if kept else flag.serves_everyone


def _rules_read_clock(rules: list[Rule], timed_segments: set[str]) -> bool:
    """Whether a condition of ``rules``, or of a segment they use, is on ``$now``."""
    return any(
        _reads_clock(condition, timed_segments) for rule in rules for condition in rule.conditions
    )


def _reads_clock(condition: Condition, timed_segments: set[str]) -> bool:
    if condition.op is Operator.IN_SEGMENT:
        return any(name in timed_segments for name in condition.values)
    return condition.attribute == NOW_ATTRIBUTE


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
    if flag.salt is not None and not valid_utf8(flag.salt):
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
    compiled.split = Split(
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
) -> CompiledRule:
    matchers = []
    for index, condition in enumerate(rule.conditions):
        condition_path = f"{path}.conditions[{index}]"
        try:
            matchers.append(compile_condition(condition, condition_path, segments))
        except InvalidDocumentError as problem:
            if problem.path == "$.segments":  # unknown segment: point at the condition
                raise InvalidDocumentError(problem.problem, f"{condition_path}.values") from None
            raise
    split: Split | None = None
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
        split = Split(bound, rule.weights, path, variants)
    return CompiledRule(matchers, rule.variant, split, rule.name)


def _link_gates(compiled: CompiledFlag, flags: Mapping[str, CompiledFlag]) -> None:
    key = compiled.key
    parts = key.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        parent = flags.get(".".join(parts[:depth]))
        if parent is not None:
            compiled.gates.append(Gate(parent, "parent", None))
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
        compiled.gates.append(Gate(upstream, "prerequisite", prerequisite.variant))


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
