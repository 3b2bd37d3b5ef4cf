"""The compiled snapshot: what every server worker and ``LocalClient`` evaluates from, and
the plan that evaluates every flag for one context at once."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping

from flagport._exceptions import InvalidDocumentError
from flagport.engine._common import Context, Memo
from flagport.engine._conditions import NOW_ATTRIBUTE, Matcher
from flagport.engine._flag import CompiledFlag
from flagport.engine.models import ErrorCode, EvaluationResult, Reason, Segment, SnapshotDocument

__all__ = ["CompiledSegment", "CompiledSnapshot", "EvaluationPlan", "plan_evaluation"]


class CompiledSegment:
    """One segment as compiled: its matcher (one that matches nobody if it failed to
    compile, ``problem`` saying why). Kept with the snapshot so the next compile reuses it
    when the segment did not change."""

    __slots__ = ("matcher", "problem", "reads_clock", "segment")

    def __init__(
        self, segment: Segment, matcher: Matcher, problem: InvalidDocumentError | None
    ) -> None:
        self.segment = segment
        self.matcher = matcher
        self.problem = problem
        #: Whether a condition reads ``$now`` (a flag using it then reads the clock).
        self.reads_clock = any(c.attribute == NOW_ATTRIBUTE for c in segment.conditions)


class _Followers:
    """A flag's ``evaluate_all`` step that also fills in every flag whose result follows
    from this one's alone (transitively), with one ``dict.update`` from a bundle prepared
    per result of this flag (ids are stable: each flag's results are cached for the
    snapshot's lifetime)."""

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


class EvaluationPlan:
    """How ``evaluate_all`` runs over a snapshot's flags (see :func:`plan_evaluation`)."""

    __slots__ = ("clock_keys", "steps", "template")

    def __init__(
        self,
        template: dict[str, EvaluationResult | None],
        steps: list[tuple[str, Callable[..., EvaluationResult]]],
        clock_keys: frozenset[str],
    ) -> None:
        self.template = template
        self.steps = steps
        self.clock_keys = clock_keys


def plan_evaluation(order: list[CompiledFlag]) -> Generator[int, None, EvaluationPlan]:
    """The plan of ``evaluate_all`` over the flags of ``order`` (topological); yields a
    running count of the flags handled, so a chunked compile can pause in between.

    ``evaluate_all`` copies the template (every key in topological order, constant flags
    already answered) and runs one step per remaining flag, in the same order. Flags whose
    result follows from one gate's alone (children at 100 % of a split parent) get no step:
    their gate's step fills them in, see :class:`_Followers`."""
    template: dict[str, EvaluationResult | None] = {}
    followers: dict[str, list[CompiledFlag]] = {}
    clock_keys: list[str] = []
    for count, flag in enumerate(order, 1):
        template[flag.key] = flag.constant
        if flag.constant is None and flag.follows is not None:
            followers.setdefault(flag.follows, []).append(flag)
        if flag.reads_clock:
            clock_keys.append(flag.key)
        if count % 256 == 0:
            yield count
    position = {key: index for index, key in enumerate(template)}
    steps: list[tuple[str, Callable[..., EvaluationResult]]] = []
    for count, flag in enumerate(order, len(order)):
        if count % 256 == 0:
            yield count
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
        steps.append((flag.key, step))
    return EvaluationPlan(template, steps, frozenset(clock_keys))


def _not_found(key: str) -> EvaluationResult:
    return EvaluationResult(
        key=key,
        value=None,
        variant=None,
        reason=Reason.ERROR,
        error_code=ErrorCode.FLAG_NOT_FOUND,
        error_message=f"flag {key!r} not found",
    )


class CompiledSnapshot:
    """An immutable, compiled snapshot. Build it with
    :func:`~flagport.engine.compile_snapshot`."""

    __slots__ = (
        "_flags",
        "_order",
        "_plan",
        "_template",
        "bucket_attributes",
        "clock_keys",
        "document",
        "problems",
        "segments",
        "unreadable_segments",
        "version",
    )

    def __init__(
        self,
        document: SnapshotDocument,
        flags: dict[str, CompiledFlag],
        order: list[CompiledFlag],
        problems: list[InvalidDocumentError],
        *,
        segments: Mapping[str, CompiledSegment] | None = None,
        unreadable_segments: Mapping[str, str] | None = None,
        plan: EvaluationPlan | None = None,
    ) -> None:
        """``plan`` is what :func:`plan_evaluation` made of ``order`` (made here if
        ``None``)."""
        self.document = document
        #: What the next compile reuses: the compiled segments, and the stored segments
        #: that could not be read (name -> why).
        self.segments = dict(segments or {})
        self.unreadable_segments = dict(unreadable_segments or {})
        self.version = document.version
        self._flags = flags
        self._order = order
        self.problems = problems
        if plan is None:
            steps = plan_evaluation(order)
            while True:
                try:
                    next(steps)
                except StopIteration as finished:
                    plan = finished.value
                    break
        #: Keys of the flags whose result can depend on the evaluation time (see
        #: :attr:`CompiledFlag.reads_clock`): only those need ``now``.
        self.clock_keys = plan.clock_keys
        self._template = plan.template
        self._plan = plan.steps
        #: The attributes the flags bucket by (the units a count keeps of a context).
        self.bucket_attributes = frozenset(f.bucket_by for f in order if f.bucket_by)

    def dismantle(self, chunk_size: int = 1000) -> Iterator[None]:
        """Drop this snapshot's flags, the gated ones first, pausing (yielding) after each
        ``chunk_size``: freeing a large snapshot at once holds the caller (tens of
        milliseconds for 15,000 flags). Only for a snapshot nothing evaluates from any more
        (a candidate compiled to be checked): it holds no flag afterwards."""
        order = self._order
        self._order = []
        self._flags = {}
        self._plan = []
        self._template = {}
        self.clock_keys = frozenset()
        # A flag's gates come before it in ``order``: cutting from the end frees each flag
        # once nothing later refers to it.
        while order:
            del order[-chunk_size:]
            yield
        self.segments = {}

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

        ``now`` (seconds since the epoch) is what conditions on ``$now`` compare with; the
        engine never reads the clock itself.
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
