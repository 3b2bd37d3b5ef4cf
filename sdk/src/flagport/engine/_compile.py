"""Compile a snapshot document: validate each flag and segment, link each flag to its gates,
order the flags so that gates come first, fold what cannot depend on the context, and
install the specialised evaluators. Compilation happens once per snapshot version.

A flag that fails to compile (unknown variant, unknown segment, prerequisite cycle, ...)
serves its off variant with error code ``PARSE_ERROR`` and is listed in
``CompiledSnapshot.problems``; ``strict=True`` raises instead (the admin API validates that
way, so bad input never reaches the store).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
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
from flagport.engine._snapshot import CompiledSegment, CompiledSnapshot, plan_evaluation
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

__all__ = ["DEFAULT_CHUNK_SIZE", "SnapshotBuild", "compile_snapshot"]

_STATIC = Reason.STATIC


def compile_snapshot(
    document: SnapshotDocument,
    *,
    strict: bool = False,
    unreadable_flags: Mapping[str, str] | None = None,
    unreadable_segments: Mapping[str, str] | None = None,
    previous: CompiledSnapshot | None = None,
) -> CompiledSnapshot:
    """Compile ``document``. With ``strict=True`` the first problem raises
    :class:`InvalidDocumentError` (its ``path`` names the field); otherwise a broken flag
    serves ``PARSE_ERROR`` and is listed in ``problems``.

    ``unreadable_flags`` and ``unreadable_segments`` (key -> why) name what a store holds but
    cannot decode. Such a flag is not in ``document`` but is served, as ``PARSE_ERROR``, so
    that its children and dependants stay gated by it instead of turning into top-level
    flags; flags that use such a segment are broken too.

    With ``previous`` (a snapshot compiled earlier), only what changed since is compiled
    (see :class:`SnapshotBuild`); the result is the same. To compile without holding the
    caller for the whole document, drive a :class:`SnapshotBuild` instead."""
    build = SnapshotBuild(
        document,
        strict=strict,
        unreadable_flags=unreadable_flags,
        unreadable_segments=unreadable_segments,
        previous=previous,
        chunk_size=None,
    )
    for _ in build.steps():
        pass
    return build.snapshot


#: Flags compiled, folded or specialised between two pauses of a :class:`SnapshotBuild`.
DEFAULT_CHUNK_SIZE = 100
#: How many times more flags the light passes (finding what changed, linking, ordering)
#: handle between two pauses than the compiling ones (1,000 against 100): each costs a few
#: dict operations per flag, against ~0.1 ms to compile one.
_LIGHT = 10


class SnapshotBuild:
    """Compile a snapshot a chunk at a time, reusing what an earlier snapshot compiled.

    ``steps()`` yields after at most ``chunk_size`` flags' worth of work (``None``: never),
    so a caller serving requests on one thread can let them run in between; once the
    iteration ends, :attr:`snapshot` is the compiled snapshot, identical to what
    :func:`compile_snapshot` gives for the same arguments (a property test compares them).
    Nothing that ``previous`` holds is changed, so it can be served until the new snapshot
    replaces it.

    With ``previous``, a flag is compiled again only if it is dirty: its record changed
    (added, changed, unreadable), it was broken, it uses a segment that changed, or it
    names a dirty flag, a removed flag or an added one as a prerequisite or by a dotted
    prefix of its key (its parent may be another flag now), and so on transitively. Every
    other flag's compiled object is reused as it is: its gates are reused too, so they
    still are the flags it is linked to. Broken flags are always compiled again, so every
    problem comes from compiling, in the order a full compile reports it.
    """

    def __init__(
        self,
        document: SnapshotDocument,
        *,
        strict: bool = False,
        unreadable_flags: Mapping[str, str] | None = None,
        unreadable_segments: Mapping[str, str] | None = None,
        previous: CompiledSnapshot | None = None,
        chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if document.bucketing != BUCKETING_VERSION:
            raise InvalidDocumentError(
                f"unsupported bucketing version {document.bucketing}; "
                f"this engine implements {BUCKETING_VERSION}",
                "$.bucketing",
            )
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.document = document
        self.strict = strict
        self.unreadable_flags = dict(unreadable_flags or {})
        self.unreadable_segments = dict(unreadable_segments or {})
        self.previous = previous
        self.chunk_size = chunk_size
        self.problems: list[InvalidDocumentError] = []
        #: Keys of the flags compiled afresh (every flag without ``previous``).
        self.compiled: set[str] = set()
        self._snapshot: CompiledSnapshot | None = None

    @property
    def snapshot(self) -> CompiledSnapshot:
        """The compiled snapshot, once :meth:`steps` has run to its end."""
        if self._snapshot is None:
            raise RuntimeError("the snapshot is not built yet: run steps() to their end")
        return self._snapshot

    def _report(self, problem: InvalidDocumentError, flag: CompiledFlag | None) -> None:
        if self.strict:
            raise problem
        self.problems.append(problem)
        if flag is not None and flag.broken is None:
            flag.broken = problem

    def steps(self) -> Iterator[None]:
        """Compile, pausing (yielding) between chunks; see the class documentation."""
        light = None if self.chunk_size is None else self.chunk_size * _LIGHT
        document = self.document
        report = self._report
        previous = self.previous

        # Segments are few and cheap: compiled (or reused) in one go.
        old_segments = previous.segments if previous is not None else {}
        segments: dict[str, CompiledSegment] = {}
        for name, segment in document.segments.items():
            reused = old_segments.get(name)
            if reused is None or reused.segment != segment:
                try:
                    reused = CompiledSegment(segment, _compile_segment(name, segment), None)
                except InvalidDocumentError as problem:
                    reused = CompiledSegment(segment, _never, problem)
            if reused.problem is not None:
                report(reused.problem, None)
            segments[name] = reused
        timed_segments = {name for name, segment in segments.items() if segment.reads_clock}
        unreadable_segments = self.unreadable_segments
        for name, why in unreadable_segments.items():
            report(
                InvalidDocumentError(
                    f"stored segment cannot be read: {why}", f'$.segments["{name}"]'
                ),
                None,
            )

        def lookup_segment(name: str) -> Matcher:
            segment = segments.get(name)
            if segment is None:
                if name in unreadable_segments:
                    raise InvalidDocumentError(f"segment {name!r} cannot be read", "$.segments")
                raise InvalidDocumentError(f"unknown segment {name!r}", "$.segments")
            return segment.matcher

        dirty: set[str] | None = None
        if previous is not None:
            changed_segments = {
                name
                for name in segments.keys() | old_segments.keys()
                if segments.get(name) is not old_segments.get(name)
            } | (unreadable_segments.keys() ^ previous.unreadable_segments.keys())
            finding = _dirty_flags(document, self.unreadable_flags, previous, changed_segments)
            dirty = yield from _paced(finding, light)

        flags: dict[str, CompiledFlag] = {}
        fresh: list[CompiledFlag] = []
        for key, why in self.unreadable_flags.items():
            placeholder = CompiledFlag(key, _UNREADABLE)
            flags[key] = placeholder
            fresh.append(placeholder)
            report(
                InvalidDocumentError(f"stored flag cannot be read: {why}", flag_path(key)),
                placeholder,
            )
        # Work is counted in light units: a flag compiled costs _LIGHT, one reused 1.
        work = 0
        for key, flag in document.flags.items():
            if dirty is not None and key not in dirty:
                flags[key] = previous.flag(key)  # type: ignore[union-attr, assignment]
                work += 1
            else:
                compiled = CompiledFlag(key, flag)
                flags[key] = compiled
                fresh.append(compiled)
                try:
                    validate_key(key, flag_path(key))
                    _compile_body(compiled, flag, lookup_segment)
                except InvalidDocumentError as problem:
                    report(problem, compiled)
                work += _LIGHT
            if light is not None and work >= light:
                work = 0
                yield
        self.compiled = {flag.key for flag in fresh}

        for done, compiled in enumerate(fresh, 1):
            try:
                _link_gates(compiled, flags)
            except InvalidDocumentError as problem:
                report(problem, compiled)
            # The order is worked out from every flag's declared gates; a fresh flag's are
            # its gates until folding drops the constant ones.
            compiled.declared_gates = compiled.gates
            if light is not None and done % light == 0:
                yield

        order: list[CompiledFlag] = []
        yield from _paced(_topological_order(flags, order, report), light)

        work = 0
        compiled_keys = self.compiled
        for compiled in order:
            if compiled.key in compiled_keys:
                _fold(compiled)
                compiled.reads_clock = compiled.constant is None and (
                    _rules_read_clock(compiled.flag.rules, timed_segments)
                    or any(gate.flag.reads_clock for gate in compiled.gates)
                )
                specialise(compiled)
                work += _LIGHT
            else:
                work += 1
            if light is not None and work >= light:
                work = 0
                yield
        plan = yield from _paced(plan_evaluation(order), light)
        self._snapshot = CompiledSnapshot(
            document,
            flags,
            order,
            self.problems,
            segments=segments,
            unreadable_segments=unreadable_segments,
            plan=plan,
        )


def _paced(work: Iterator[int], every: int | None) -> Generator[None, None, Any]:
    """Run ``work`` (which yields a running count of flags handled), pausing each time
    another ``every`` flags are done; returns what ``work`` returns."""
    mark = every
    while True:
        try:
            count = next(work)
        except StopIteration as finished:
            return finished.value
        if mark is not None and count >= mark:
            mark = count + every  # type: ignore[operator]
            yield


def _dirty_flags(
    document: SnapshotDocument,
    unreadable: Mapping[str, str],
    previous: CompiledSnapshot,
    changed_segments: set[str],
) -> Generator[int, None, set[str]]:
    """The flags of ``document`` to compile again rather than reuse from ``previous`` (see
    :class:`SnapshotBuild`); yields how many flags it has looked at so far."""
    seeds: list[str] = list(unreadable)
    # Who names whom: a flag names each dotted prefix of its key (a parent now or later),
    # its prerequisites and the segments it uses.
    named_by: dict[str, list[str]] = {}
    count = 0
    for key in unreadable:
        _add_prefixes(named_by, key)
    for key, flag in document.flags.items():
        before = previous.flag(key)
        if (
            before is None
            or before.broken is not None
            or before.flag != flag
            or (changed_segments and _uses_any(flag, changed_segments))
        ):
            seeds.append(key)
        _add_prefixes(named_by, key)
        for prerequisite in flag.prerequisites:
            named_by.setdefault(prerequisite.key, []).append(key)
        count += 1
        if count % 64 == 0:
            yield count
    seeds += [key for key in previous if key not in document.flags and key not in unreadable]
    dirty: set[str] = set()
    while seeds:
        key = seeds.pop()
        if key in dirty:
            continue
        dirty.add(key)
        seeds.extend(named_by.get(key, ()))
        count += 1
        if count % 64 == 0:
            yield count
    return dirty


def _add_prefixes(named_by: dict[str, list[str]], key: str) -> None:
    end = key.rfind(".")
    while end > 0:
        named_by.setdefault(key[:end], []).append(key)
        end = key.rfind(".", 0, end)


def _uses_any(flag: Flag, segments: set[str]) -> bool:
    return any(
        condition.op is Operator.IN_SEGMENT and not segments.isdisjoint(condition.values)
        for rule in flag.rules
        for condition in rule.conditions
    )


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
    order: list[CompiledFlag],
    report: Callable[[InvalidDocumentError, CompiledFlag | None], None],
) -> Iterator[int]:
    """Append to ``order`` every flag, gates before the flags they gate (by their
    ``declared_gates``); a cycle breaks every flag on it (PARSE_ERROR). Yields how many flags
    are ordered so far after each flag whose own gates are ordered.

    Only flags compiled afresh can be on a cycle (a reused flag's gates are reused flags,
    compiled without one), so cutting a cycle never changes a reused flag."""
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
            if index < len(node.declared_gates):
                stack.append((node, index + 1))
                upstream = node.declared_gates[index].flag
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
                    node.declared_gates = node.gates
                    stack[-1] = (node, index)
                elif mark is None:
                    stack.append((upstream, 0))
                continue
            state[node.key] = 2
            path.pop()
            order.append(node)
            yield len(order)
